import numpy as np
import pytest
import torch
from compressai.entropy_models import EntropyBottleneck

from anr_codec import AnrError
from anr_codec.context import ContextCoder, build_context_tables, count_contexts
from conftest import most_probable
from anr_codec.entropy import PRECISION, SYMBOL_LIMIT, SymbolCoder, build_tables, quantize_pmf, symbols_checksum


@pytest.fixture(scope="module")
def coder():
    torch.manual_seed(0)
    return SymbolCoder(build_tables(EntropyBottleneck(6)))


@pytest.fixture(scope="module", params=["factorized", "context"])
def any_coder(request, coder):
    """Both codings: the hostile-payload bounds must hold for each."""
    if request.param == "factorized":
        return coder
    torch.manual_seed(0)
    t = build_tables(EntropyBottleneck(6))
    sym = np.round(np.random.default_rng(0).laplace(0, 2, (6, 30, 30))).astype(np.int32)
    t["ctx_counts"] = build_context_tables(count_contexts(sym), t)
    return ContextCoder(t)


def test_quantized_pmf_is_exact_and_positive():
    c = quantize_pmf(np.array([0.7, 0.2999, 1e-9, 0.0001]), 1 << PRECISION)
    assert c.sum() == 1 << PRECISION and (c >= 1).all()
    assert c[0] > c[1] > c[3] >= c[2]


def test_round_trip_including_escapes(coder):
    rng = np.random.default_rng(1)
    s = rng.integers(-4, 5, (6, 7, 9)).astype(np.int32)
    s[0, 0, 0], s[3, 6, 8], s[5, 2, 2] = 5000, -SYMBOL_LIMIT, SYMBOL_LIMIT  # far outside the tables
    data = coder.encode(s)
    assert len(data) % 4 == 0
    out = coder.decode(data, s.shape)
    np.testing.assert_array_equal(out, s)
    assert symbols_checksum(out) == symbols_checksum(s)


def test_encoding_is_deterministic(coder):
    s = np.random.default_rng(2).integers(-3, 4, (6, 4, 4)).astype(np.int32)
    assert coder.encode(s) == coder.encode(s.copy())


def test_garbage_payload_never_escapes_as_other_error(any_coder):
    rng = np.random.default_rng(3)
    for n in (0, 4, 8, 64, 400):
        try:
            any_coder.decode(rng.integers(0, 256, n, dtype=np.uint8).tobytes(), (6, 3, 3))
        except AnrError:
            pass
    with pytest.raises(AnrError, match="32-bit"):
        any_coder.decode(b"\x00" * 5, (6, 3, 3))


def test_bad_table_is_refused():
    t = build_tables(EntropyBottleneck(2))
    t["counts"][0, 0] += 1
    with pytest.raises(AnrError, match="entropy table"):
        SymbolCoder(t)


@pytest.mark.parametrize("shape", [(6, 1, 1), (6, 3, 5), (6, 40, 60)])
def test_length_bound_admits_the_cheapest_honest_streams(any_coder, shape):
    for s in (most_probable(any_coder, shape),
              np.random.default_rng(4).integers(-2, 3, shape).astype(np.int32)):
        data = any_coder.encode(s)
        assert len(data) >= any_coder.min_payload_bytes(shape)
        np.testing.assert_array_equal(any_coder.decode(data, shape), s)


def test_length_bound_with_the_shipped_tables(v1_codec):
    for q in (1, v1_codec.qualities()[-1]):
        coder = v1_codec.model.coder(q)
        shape = (coder.channels, 4, 7)
        s = most_probable(coder, shape)
        data = coder.encode(s)
        assert coder.min_payload_bytes(shape) <= len(data)
        np.testing.assert_array_equal(coder.decode(data, shape), s)


def test_short_payload_is_refused_before_decoding(any_coder):
    shape = (6, 1000, 1000)
    need = any_coder.min_payload_bytes(shape)
    assert need > 10_000
    for payload in (b"", bytes(4), bytes(4 * (need // 4 - 16))):
        with pytest.raises(AnrError, match="too short"):
            any_coder.decode(payload, shape)


def test_decoding_stops_when_the_payload_is_spent(any_coder):
    """Long enough to pass the length bound, but it decodes to more information than it holds:
    zeros select the first (least probable) entry of each table."""
    shape = (6, 300, 300)
    payload = bytes(-(-any_coder.min_payload_bytes(shape) // 4) * 4)
    with pytest.raises(AnrError, match="more information than the payload holds"):
        any_coder.decode(payload, shape)


def test_length_bound_with_a_near_certain_symbol():
    """A table where one symbol has probability 65534/65536: a million of them fit in a few
    words, and the bound must still admit that."""
    c = SymbolCoder({"lo": np.array([-1]), "n": np.array([3]), "counts": np.array([[1, 65534, 1]])})
    for n in (1, 1000, 1_000_000):
        s = np.zeros((1, 1, n), np.int32)
        data = c.encode(s)
        assert c.min_payload_bytes(s.shape) <= len(data) <= 16
        np.testing.assert_array_equal(c.decode(data, s.shape), s)
