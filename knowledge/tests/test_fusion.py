"""Fusion of the dense and lexical legs (knowledge.retrieval): pure functions, no database."""

from __future__ import annotations

import math

import pytest

from knowledge import retrieval


def ranked(scores: dict[int, float]) -> list[tuple[int, float]]:
    return sorted(scores.items(), key=lambda p: -p[1])


def order(fused: dict[int, float]) -> list[int]:
    return sorted(fused, key=lambda i: (-fused[i], i))


PEAKED = [9.0, 2.0, 1.8, 1.7, 1.5, 1.4, 1.2, 1.1, 1.0, 0.9]  # one candidate far ahead
FLAT = [0.51, 0.51, 0.51, 0.505, 0.5, 0.5, 0.5, 0.495, 0.49, 0.49]  # nothing stands out


def test_leg_confidence_is_high_for_a_clear_winner_and_low_for_a_flat_list():
    assert retrieval.leg_confidence(PEAKED) > 0.9
    assert retrieval.leg_confidence(FLAT) < 0.5
    # One candidate ahead of nine equal ones is the maximum.
    assert retrieval.leg_confidence([5.0] + [1.0] * 9) == pytest.approx(1.0)


def test_leg_confidence_is_scale_free_and_order_free():
    assert retrieval.leg_confidence([s * 37.5 for s in PEAKED]) == pytest.approx(retrieval.leg_confidence(PEAKED))
    assert retrieval.leg_confidence(list(reversed(PEAKED))) == pytest.approx(retrieval.leg_confidence(PEAKED))


def test_leg_confidence_reads_only_the_best_candidates():
    # What lies beyond the first CONFIDENCE_DEPTH scores does not change the confidence.
    tail = [0.1] * 40
    assert retrieval.leg_confidence(FLAT + tail) == pytest.approx(retrieval.leg_confidence(FLAT))


@pytest.mark.parametrize("scores", [[], [3.0], [2.0, 2.0, 2.0]])
def test_leg_confidence_is_zero_without_evidence(scores):
    assert retrieval.leg_confidence(scores) == 0.0


def test_leg_confidence_stays_in_range_where_rounding_puts_the_mean_above_equal_scores():
    # Eight equal floats whose float mean is a hair above them: unclamped, -0.38, and 0.5 ** the adaptive
    # strength of a negative number is complex (every such search answered 500).
    equal = [0.8933170425576351] * 8
    assert sum(equal) / len(equal) > equal[0]
    assert retrieval.leg_confidence(equal) == 0.0
    assert retrieval.leg_confidence([*equal, equal[0] - 1e-12]) >= 0.0
    wd, wl = retrieval.adaptive_weights(PEAKED, equal, dense_weight=0.8, lexical_weight=0.2)
    assert isinstance(wl, float) and (wd, wl) == pytest.approx((1.0, 0.0))


def test_adaptive_weights_move_toward_the_confident_leg_and_keep_their_sum():
    wd, wl = retrieval.adaptive_weights(FLAT, PEAKED, dense_weight=0.7, lexical_weight=0.3)
    assert wl > 0.3 and wd < 0.7 and wd + wl == pytest.approx(1.0)
    wd, wl = retrieval.adaptive_weights(PEAKED, FLAT, dense_weight=0.7, lexical_weight=0.3)
    assert wd > 0.7 and wl < 0.3 and wd + wl == pytest.approx(1.0)


def test_adaptive_weights_equal_confidence_keeps_the_base_weights():
    assert retrieval.adaptive_weights(PEAKED, PEAKED, dense_weight=0.7, lexical_weight=0.3) == pytest.approx((0.7, 0.3))


def test_adaptive_weights_without_a_lexical_leg_give_everything_to_dense():
    # A query of stop words has no lexical candidates: the dense leg alone decides.
    assert retrieval.adaptive_weights(PEAKED, [], dense_weight=0.7, lexical_weight=0.3) == pytest.approx((1.0, 0.0))
    # Neither leg has anything to say: the base weights stay.
    assert retrieval.adaptive_weights([], [], dense_weight=0.7, lexical_weight=0.3) == (0.7, 0.3)


def test_adaptive_fusion_follows_the_confident_lexical_leg_where_fixed_weights_do_not():
    # The embedding barely separates the candidates (chunk 1 a hair ahead); BM25 finds chunk 2 far ahead.
    dense = {1: 0.52, 2: 0.35, **{i: 0.50 - 0.002 * i for i in range(3, 11)}}
    lexical = {2: 12.0, **{i: 1.0 + 0.01 * i for i in range(3, 11)}}
    fixed = retrieval.fuse_weighted(dense, lexical, dense_weight=0.8, lexical_weight=0.2)
    assert order(fixed)[0] == 1
    adaptive = retrieval.fuse_adaptive(
        ranked(dense), ranked(lexical), dense, lexical, dense_weight=0.8, lexical_weight=0.2
    )
    assert order(adaptive)[0] == 2


def test_adaptive_fusion_ignores_a_flat_lexical_leg_where_fixed_weights_follow_it():
    # Every candidate shares the query's common words about equally (flat BM25); the dense leg is sure of 1.
    dense = {1: 0.80, **{i: 0.40 - 0.001 * i for i in range(2, 11)}}
    lexical = {1: 3.0, **{i: 4.3 - 0.01 * i for i in range(2, 11)}}
    lexical[2] = 4.4
    fixed = retrieval.fuse_weighted(dense, lexical, dense_weight=0.3, lexical_weight=0.7)
    assert order(fixed)[0] == 2
    adaptive = retrieval.fuse_adaptive(
        ranked(dense), ranked(lexical), dense, lexical, dense_weight=0.3, lexical_weight=0.7
    )
    assert order(adaptive)[0] == 1


def test_fuse_dispatches_on_the_fusion_setting():
    dense = [(1, 0.9), (2, 0.5), (3, 0.4)]
    lexical = [(3, 8.0), (2, 1.0)]
    dense_scores, lexical_scores = dict(dense), dict(lexical)
    opts = {**retrieval.DEFAULT_SEARCH_SETTINGS, "dense_weight": 0.6, "lexical_weight": 0.4}

    def fuse(mode: str, fusion: str) -> dict[int, float]:
        return retrieval._fuse(mode, {**opts, "fusion": fusion}, dense, lexical, dense_scores, lexical_scores)

    assert fuse("dense", "adaptive") == dense_scores and fuse("lexical", "adaptive") == lexical_scores
    assert fuse("hybrid", "weighted") == retrieval.fuse_weighted(
        dense_scores, lexical_scores, dense_weight=0.6, lexical_weight=0.4
    )
    assert fuse("hybrid", "rrf") == retrieval.fuse_rrf([1, 2, 3], [3, 2], k=60, dense_weight=0.6, lexical_weight=0.4)
    wd, wl = retrieval.adaptive_weights([0.9, 0.5, 0.4], [8.0, 1.0], dense_weight=0.6, lexical_weight=0.4)
    assert fuse("hybrid", "adaptive") == retrieval.fuse_weighted(
        dense_scores, lexical_scores, dense_weight=wd, lexical_weight=wl
    )


def test_weighted_fusion_normalises_each_leg_by_its_maximum_from_zero():
    fused = retrieval.fuse_weighted({1: 0.5, 2: 0.25, 3: -0.2}, {2: 6.0}, dense_weight=0.8, lexical_weight=0.2)
    assert fused == pytest.approx({1: 0.8, 2: 0.8 * 0.5 + 0.2, 3: 0.0})


def test_rrf_adds_weighted_reciprocal_ranks():
    fused = retrieval.fuse_rrf([1, 2], [2, 3], k=60, dense_weight=0.7, lexical_weight=0.3)
    assert fused == pytest.approx({1: 0.7 / 61, 2: 0.7 / 62 + 0.3 / 61, 3: 0.3 / 62})
    assert math.isclose(sum(fused.values()), 0.7 / 61 + 0.7 / 62 + 0.3 / 61 + 0.3 / 62)
