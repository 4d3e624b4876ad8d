from __future__ import annotations

from agent.trust.bench import main, measure


def test_bench_measures_both_built_in_engines_on_a_valid_path():
    results = measure(seconds=0.05)
    for engine in ("agent.trust", "agent.trust (cold, no link memo)", "x509.verification"):
        assert isinstance(results[engine], float) and results[engine] > 0


def test_bench_prints_json(capsys):
    main(["--seconds", "0.02", "--json"])
    assert '"x509.verification"' in capsys.readouterr().out
