"""The soak's own arithmetic and arguments (bench/soak.py); the soak itself runs by hand (README,
*Soak*): minutes of load on the whole machine."""

from __future__ import annotations

import math

import pytest

from bench import soak


def test_a_setting_without_a_value_is_refused_before_anything_starts(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        soak.main(["--setting", "QUEUE_WORKERS"])
    assert stopped.value.code == 2
    assert "NOM=VALEUR attendu" in capsys.readouterr().err


def test_quantiles_from_buckets_as_prometheus_computes_them() -> None:
    buckets = {0.1: 50.0, 0.5: 90.0, 1.0: 100.0, float("inf"): 100.0}
    assert soak.bucket_quantile(0.5, buckets) == pytest.approx(0.1)
    assert soak.bucket_quantile(0.7, buckets) == pytest.approx(0.3)  # halfway in (0.1, 0.5]
    assert soak.bucket_quantile(0.99, buckets) == pytest.approx(0.95)
    assert math.isnan(soak.bucket_quantile(0.5, {float("inf"): 0.0}))
