import math

import numpy as np
import pytest

from components.mixing import balanced_weights, stream_plan

SIZES = {"coco_caption": 4000, "vqav2": 9000, "okvqa": 900, "aokvqa": 1600, "llava_detail": 100}


def test_balanced_weights_are_sqrt_proportional_with_multipliers():
    p = balanced_weights(SIZES, {"okvqa": 2.0, "aokvqa": 0.5})
    raw = {d: math.sqrt(s) for d, s in SIZES.items()}
    raw["okvqa"] *= 2.0
    raw["aokvqa"] *= 0.5
    total = sum(raw.values())
    for d in SIZES:
        assert p[d] == pytest.approx(raw[d] / total)
    assert sum(p.values()) == pytest.approx(1.0)


def test_unbalanced_is_size_proportional_and_ignores_multipliers():
    p = balanced_weights(SIZES, {"okvqa": 2.0}, balanced=False)
    total = sum(SIZES.values())
    assert p["okvqa"] == pytest.approx(900 / total)


def test_stream_proportions_match_probabilities():
    n = 20000
    names, which, rows = stream_plan(SIZES, n, seed=1, multipliers={"okvqa": 2.0, "aokvqa": 0.5})
    p = balanced_weights(SIZES, {"okvqa": 2.0, "aokvqa": 0.5})
    for i, d in enumerate(names):
        observed = float(np.mean(which == i))
        # 4 binomial standard deviations
        assert abs(observed - p[d]) < 4 * math.sqrt(p[d] * (1 - p[d]) / n), (d, observed, p[d])
        assert rows[which == i].max() < SIZES[d]


def test_small_dataset_repeats_every_row_before_any_twice():
    names, which, rows = stream_plan({"a": 10, "b": 10000}, 3000, seed=0)
    a_rows = rows[which == names.index("a")]
    first_epoch = a_rows[:10]
    assert sorted(first_epoch.tolist()) == list(range(10))


def test_stream_is_deterministic_for_a_seed():
    a = stream_plan(SIZES, 500, seed=7)
    b = stream_plan(SIZES, 500, seed=7)
    c = stream_plan(SIZES, 500, seed=8)
    assert np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
    assert not (np.array_equal(a[1], c[1]) and np.array_equal(a[2], c[2]))


def test_unbalanced_stream_is_a_permutation_of_the_concatenation():
    sizes = {"a": 30, "b": 70}
    names, which, rows = stream_plan(sizes, 100, seed=3, balanced=False)
    pairs = {(names[w], r) for w, r in zip(which.tolist(), rows.tolist())}
    assert len(pairs) == 100  # every row exactly once in the first epoch


def test_empty_mixture_is_an_error():
    with pytest.raises(ValueError):
        balanced_weights({"a": 0})


def test_local_stream_declines_a_stream_over_the_limit(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from components.mixing import _fs, _local_stream

    files = {}
    for d in ("a", "b"):
        path = tmp_path / f"{d}.parquet"
        pq.write_table(pa.table({"sample_id": [f"{d}{i}" for i in range(20)], "image": [b"x" * 1000] * 20}), path)
        files[d] = [str(path)]
    fs, _ = _fs(str(tmp_path))
    # 20 rows of ~1 kB per dataset; 200 stream positions repeat them to ~200 kB, over a 100 kB limit
    assert _local_stream(files, fs, {"a": 20, "b": 20}, 200, 0, None, True, limit=100_000) is None
