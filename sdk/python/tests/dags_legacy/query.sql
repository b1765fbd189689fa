select * from events where day = '{{ ds }}' limit {{ params.limit }}
