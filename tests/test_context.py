import numpy as np
import pytest
import torch
from compressai.entropy_models import EntropyBottleneck

from anr_codec import AnrError
from anr_codec.context import (CONTEXTS, ESCAPE, MAGNITUDE_CAP, WIDTH, WINDOW, ContextCoder, _magnitudes,
                               build_context_tables, contexts, count_contexts)
from anr_codec.entropy import PRECISION, SYMBOL_LIMIT, SymbolCoder, build_tables, symbols_checksum


def clustered(seed: int, shape=(6, 32, 32), block: int = 8) -> np.ndarray:
    """Laplacian symbols whose spread changes from block to block, like a latent's
    texture against flat regions."""
    rng = np.random.default_rng(seed)
    c, h, w = shape
    scale = rng.uniform(0.1, 6, (c, -(-h // block), -(-w // block))).repeat(block, 1).repeat(block, 2)
    return np.round(rng.laplace(0, scale[:, :h, :w])).astype(np.int32)


@pytest.fixture(scope="module")
def tables():
    torch.manual_seed(0)
    t = build_tables(EntropyBottleneck(6))
    counts = None
    for seed in range(4):
        counts = count_contexts(clustered(seed), counts)
    t["ctx_counts"] = build_context_tables(counts, t)
    return t


@pytest.fixture(scope="module")
def coder(tables):
    return ContextCoder(tables)


def test_context_looks_only_at_rows_above():
    s = np.zeros((1, 4, 5), np.int32)
    s[0, 1, 2] = -9  # magnitude class 4 (bit length of 9)
    ctx = contexts(s)[0]
    assert ctx[2, 1] == ctx[2, 2] == ctx[2, 3] == 4 and ctx[3, 2] == 4
    assert ctx.sum() == 16  # nothing else sees it: not its own row, not the left neighbour's row
    s[0] = 100
    assert contexts(s)[0].max() == CONTEXTS - 1 and contexts(s)[0, 0].max() == 0


def test_magnitude_classes_are_bit_lengths():
    s = np.array([[[0, 1, -1, 2, 3, -4, 7, 8, WINDOW, WINDOW + 1, -5000]]], np.int32)
    np.testing.assert_array_equal(_magnitudes(s)[0, 0], [0, 1, 1, 2, 2, 3, 3, 4, MAGNITUDE_CAP - 1,
                                                         MAGNITUDE_CAP, MAGNITUDE_CAP])


def test_tables_are_exact_and_positive(tables):
    t = tables["ctx_counts"]
    assert t.shape == (6, CONTEXTS, WIDTH)
    assert (t >= 1).all() and (t.sum(-1) == 1 << PRECISION).all()


def test_round_trip_including_escapes(coder):
    s = clustered(9, (6, 13, 17))
    s[0, 0, 0], s[3, 12, 16], s[5, 2, 2] = 5000, -SYMBOL_LIMIT, SYMBOL_LIMIT  # far outside every table
    s[1, 5, 5], s[2, 0, 16] = WINDOW + 1, -(WINDOW + 1)                       # just outside the window
    data = coder.encode(s)
    out = coder.decode(data, s.shape)
    np.testing.assert_array_equal(out, s)
    assert symbols_checksum(out) == symbols_checksum(s)
    assert coder.encode(s) == coder.encode(s.copy())


def test_contexts_beat_the_factorized_tables_on_clustered_symbols(tables, coder):
    s = clustered(11, (6, 48, 48))
    ctx_bytes, fact_bytes = len(coder.encode(s)), len(SymbolCoder(tables).encode(s))
    assert ctx_bytes < 0.95 * fact_bytes, (ctx_bytes, fact_bytes)


def test_bad_context_table_is_refused(tables):
    bad = dict(tables, ctx_counts=tables["ctx_counts"].copy())
    bad["ctx_counts"][0, 3, 0] += 1
    with pytest.raises(AnrError, match="context table"):
        ContextCoder(bad)
    with pytest.raises(AnrError, match="context table"):
        ContextCoder(dict(tables, ctx_counts=tables["ctx_counts"][:, :-1]))


def test_escape_inside_the_window_is_corrupt(tables):
    """Hand-made stream: the main symbol says escape, the fallback then gives 0."""
    import constriction

    from anr_codec.context import _FAMILY
    c = ContextCoder(tables)
    enc = constriction.stream.queue.RangeEncoder()
    idx = np.full(6, WINDOW, np.int32)
    idx[2] = ESCAPE
    enc.encode(idx, _FAMILY, np.ascontiguousarray(c.probs[:, 0]))
    enc.encode(int(-c.fallback.lo[2]), c.fallback.models[2])  # symbol 0 in channel 2's factorized table
    data = enc.get_compressed().astype("<u4").tobytes()
    with pytest.raises(AnrError, match="inside the table"):
        c.decode(data, (6, 1, 1))



def test_shipped_model_codes_with_contexts(v1_codec):
    """anr-v1 carries context tables, and its files round-trip through them."""
    coder = v1_codec.model.coder(v1_codec.qualities()[-1])
    assert isinstance(coder, ContextCoder)
    s = clustered(5, (coder.channels, 5, 7))
    np.testing.assert_array_equal(coder.decode(coder.encode(s), s.shape), s)
