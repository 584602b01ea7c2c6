"""The shared scheduling mechanism: a job's crontab entry found, replaced and removed by its marker.

Installing on a real cron is tested through the daily backup (tests/integration/test_backup_schedule.py)
and the renewal (tests/integration/test_tls_acme.py), which both go through this module.
"""

from __future__ import annotations

import pytest

from finaiflow_ops.schedule import find_block, merge_block, remove_units

MARK = "# finaiflow-ops job for /srv/a"
LINE = "0 2 * * * /usr/bin/true"
OTHERS = "MAILTO=ops@example.org\n15 * * * * /usr/local/bin/rotate # someone else's\n"


def test_an_entry_is_added_once_at_the_end_and_everything_else_is_kept() -> None:
    once = merge_block(OTHERS, MARK, LINE)
    assert once == f"{OTHERS}{MARK}\n{LINE}\n"
    assert merge_block(once, MARK, LINE) == once  # idempotent: the caller writes nothing then


def test_a_changed_entry_replaces_the_old_one() -> None:
    changed = merge_block(merge_block(OTHERS, MARK, LINE), MARK, LINE.replace("0 2", "30 3"))
    assert changed == f"{OTHERS}{MARK}\n30 3 * * * /usr/bin/true\n"
    assert changed.count(MARK) == 1


def test_removing_takes_out_the_marker_and_its_entry_only() -> None:
    other = "# finaiflow-ops job for /srv/b\n5 4 * * * /usr/bin/false\n"
    crontab = OTHERS + f"{MARK}\n{LINE}\n" + other
    assert merge_block(crontab, MARK, None) == OTHERS + other
    assert merge_block(OTHERS, MARK, None) == OTHERS  # nothing of ours: unchanged
    assert merge_block(f"{MARK}\n{LINE}\n", MARK, None) == ""  # empty: the crontab is removed


def test_markers_of_other_projects_are_not_mistaken_for_ours() -> None:
    # /srv/a is a prefix of /srv/ab: only the whole marker line counts.
    longer = f"{MARK}b\n{LINE}\n"
    assert merge_block(longer, MARK, None) == longer
    assert find_block(longer, MARK) == ""


def test_a_crontab_without_a_final_newline_gets_one_before_our_entry() -> None:
    assert merge_block("0 1 * * * /bin/x", MARK, LINE) == f"0 1 * * * /bin/x\n{MARK}\n{LINE}\n"


def test_find_block_returns_the_marker_and_its_entry_as_they_stand() -> None:
    crontab = merge_block(OTHERS, MARK, LINE) + "# trailing comment\n"
    assert find_block(crontab, MARK) == f"{MARK}\n{LINE}\n"
    assert find_block(f"  {MARK}  \n{LINE}\n", MARK) == f"  {MARK}  \n{LINE}\n"  # stray spaces tolerated
    assert find_block(OTHERS, MARK) == ""


def test_units_must_name_exactly_one_timer() -> None:
    with pytest.raises(ValueError, match=r"exactly one \.timer"):
        remove_units(None, ["job.service"])  # type: ignore[arg-type]  # refused before the target is used
