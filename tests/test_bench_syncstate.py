"""Keeps the sync-state measurement runnable; its figures are printed, never asserted."""

from __future__ import annotations

from tests import bench_syncstate


def test_measurement_runs_and_accounts_for_everyone(storage_connection_string, capsys):
    figures = bench_syncstate.main(
        ["--people", "4000", "--connection-string", storage_connection_string]
    )
    assert '"churn_run"' in capsys.readouterr().out
    first, churn = figures["first_run"], figures["churn_run"]
    assert first["sent"] == first["people_after"] == 4000
    assert figures["load"]["people"] == 4000
    # 5 % leave and 5 % join; of those who stay, 5 % of the people changed.
    assert churn["removals"] == 200
    assert churn["sent"] == 200 + 200
    assert churn["people_after"] == 4000
    assert churn["members"]["unchanged"] == 4000 - 200 - 200
