do $$ begin perform 1; end $$; -- comment
/* nested /* c */ */ select E'\''