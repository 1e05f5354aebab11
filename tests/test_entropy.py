import numpy as np
import pytest
import torch
from compressai.entropy_models import EntropyBottleneck

from anr_codec import AnrError
from anr_codec.entropy import PRECISION, SYMBOL_LIMIT, SymbolCoder, build_tables, quantize_pmf, symbols_checksum


@pytest.fixture(scope="module")
def coder():
    torch.manual_seed(0)
    return SymbolCoder(build_tables(EntropyBottleneck(6)))


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


def test_garbage_payload_never_escapes_as_other_error(coder):
    rng = np.random.default_rng(3)
    for n in (0, 4, 8, 64):
        try:
            coder.decode(rng.integers(0, 256, n, dtype=np.uint8).tobytes(), (6, 3, 3))
        except AnrError:
            pass
    with pytest.raises(AnrError, match="32-bit"):
        coder.decode(b"\x00" * 5, (6, 3, 3))


def test_bad_table_is_refused():
    t = build_tables(EntropyBottleneck(2))
    t["counts"][0, 0] += 1
    with pytest.raises(AnrError, match="entropy table"):
        SymbolCoder(t)
