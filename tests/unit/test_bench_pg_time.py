"""The bench's split of PostgreSQL's time by service (bench/pg_time.py)."""

from bench import pg_time


def test_each_statement_counts_for_the_service_whose_schema_it_names_first() -> None:
    assert pg_time.group_of("UPDATE outreach.actions AS a SET status = v.status") == "outreach"
    assert pg_time.group_of("INSERT INTO scoring.customers AS c (customer_id) ...") == "scoring"
    # A statement that reads another schema is its writer's: the first name decides.
    select = "WITH incoming AS (SELECT 1) INSERT INTO ingest.idempotency_keys SELECT * FROM auth.x"
    assert pg_time.group_of(select) == "ingest"
    assert pg_time.group_of("  commit") == pg_time.COMMITS
    assert pg_time.group_of("SELECT pg_try_advisory_lock($1)") == "other"


def test_a_window_is_the_difference_of_its_snapshots_per_order() -> None:
    before = {"scoring": 1.0, "outreach": 2.0}
    after = {"outreach": 2.5, "scoring": 1.2, "ingest": 0.1, "other": 0.0}
    spent = pg_time.spent(before, after)
    assert spent is not None
    assert list(spent) == ["ingest", "scoring", "outreach"]  # services first, idle ones left out
    assert round(spent["scoring"], 6) == 0.2
    text = pg_time.per_unit(spent, 1000)
    assert text == "ingest 100 µs, scoring 200 µs, outreach 500 µs; all 800 µs per order"
    assert "not measured" in pg_time.per_unit(pg_time.spent(None, after), 1000)
    # A group of next to nothing (the commits' own statements, say) is not listed.
    tiny = pg_time.per_unit({"scoring": 0.2, pg_time.COMMITS: 0.0001}, 1000)
    assert tiny == "scoring 200 µs; all 200 µs per order"
