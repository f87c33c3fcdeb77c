#!/usr/bin/env python3
"""A second real client for the masking tests (tests/pg_mask.rs): psycopg 3, binary results.

Usage: binary_select.py CONNINFO      (the password comes from PGPASSWORD)

Runs `select id, email, ssn, pin from people order by id` with a binary cursor (extended protocol,
every result column in binary format) and prints one JSON line per row:

    {"email":"...","formats":[1,1,1,1],"id":1,"pin":4821,"ssn":"..."}

`formats` are the result column formats the server (through the gateway) actually used, so the
caller can check the values really came in binary. NULL is printed as null.

Exit status: 0 on success, 2 on bad usage, 3 when psycopg is not installed (run .ci/run or
`python3 -m pip install "psycopg[binary]"`), 1 on any database error (message on stderr).
"""

import json
import sys

try:
    import psycopg
except ImportError as exc:  # the caller turns this into a failing test, never a skip
    print(
        f"psycopg 3 is not importable ({exc}): run .ci/run or "
        'python3 -m pip install "psycopg[binary]"',
        file=sys.stderr,
    )
    sys.exit(3)

QUERY = "select id, email, ssn, pin from people order by id"


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: binary_select.py CONNINFO", file=sys.stderr)
        return 2
    try:
        with psycopg.connect(sys.argv[1], autocommit=True, connect_timeout=10) as conn:
            with conn.cursor(binary=True) as cur:
                cur.execute(QUERY)
                result = cur.pgresult
                formats = [result.fformat(i) for i in range(result.nfields)] if result else []
                for row_id, email, ssn, pin in cur:
                    line = {"id": row_id, "email": email, "ssn": ssn, "pin": pin, "formats": formats}
                    print(json.dumps(line, sort_keys=True, separators=(",", ":")))
    except psycopg.Error as exc:
        print(f"database error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
