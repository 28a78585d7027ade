"""No memory growth: 20,000 mixed calls leave the resident set size where it was after warm-up.

The mix covers every call path that allocates: LSTM/GRU/RNN, stacked, bidirectional, projection,
batch_first, unbatched input, lengths, initial states, ``layer.step``, calls that raise, layers
built and dropped, weights reloaded. RSS is read from /proc/self/statm. A leak of ~450 bytes per
call (e.g. one leaked output array: they hold 64 to 2,300 bytes here) exceeds the 8 MB limit over
the 19,500 measured calls; numpy's and Python's allocator caches settle during the 500-call
warm-up (without a leak the growth measures 0.0 MB).
"""
import gc
import os
import sys

import numpy as np
import pytest

import fastrnn

WARMUP = 500
CALLS = 20_000
LIMIT_MB = 8.0

pytestmark = [
    pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm (Linux)"),
    # AddressSanitizer's quarantine holds freed memory: RSS says nothing about leaks there.
    pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""), reason="RSS is meaningless under ASan"),
]


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Mix:
    """A deterministic stream of small calls over several layers."""

    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.layers = [
            fastrnn.LSTM(8, 16, seed=1),
            fastrnn.LSTM(8, 12, num_layers=2, bidirectional=True, proj_size=5, seed=2),
            fastrnn.GRU(8, 16, bidirectional=True, seed=3),
            fastrnn.GRU(8, 10, linear_before_reset=False, batch_first=True, seed=4),
            fastrnn.RNN(8, 20, num_layers=2, nonlinearity="relu", seed=5),
            fastrnn.LSTM(8, 9, peephole=True, clip=3.0, seed=6),
        ]
        # a pool of inputs, so that the loop itself allocates nothing that lives on
        self.xs = {(T, B): self.rng.standard_normal((T, B, 8)).astype(np.float32)
                   for T in (1, 2, 5, 9) for B in (1, 3, 4)}
        self.x_unbatched = self.rng.standard_normal((6, 8)).astype(np.float32)
        self.x_bad = self.rng.standard_normal((3, 2, 7)).astype(np.float32)
        self.n = 0

    def _hx(self, layer, B):
        D = 2 if layer.bidirectional else 1
        n = layer.num_layers * D
        if isinstance(layer, fastrnn.LSTM):
            return (np.zeros((n, B, layer.proj_size or layer.hidden_size), np.float32),
                    np.ones((n, B, layer.hidden_size), np.float32))
        return np.full((n, B, layer.hidden_size), 0.5, np.float32)

    def call(self):
        i = self.n
        self.n += 1
        layer = self.layers[i % len(self.layers)]
        kind = (i // len(self.layers)) % 8
        T, B = [(1, 1), (2, 3), (5, 4), (9, 1), (5, 3), (2, 1), (9, 4), (1, 3)][(i * 7) % 8]
        x = self.xs[(T, B)]
        if layer.batch_first:
            x = x.transpose(1, 0, 2)  # a strided view: the copy-in path
        if kind == 0:
            layer(x)
        elif kind == 1:
            layer(x, self._hx(layer, B))
        elif kind == 2:
            layer(x, lengths=[T] + [max(T - 1 - k, 0) for k in range(B - 1)])
        elif kind == 3:
            layer(self.x_unbatched)
        elif kind == 4:
            try:
                layer(self.x_bad)
            except ValueError:
                pass
            try:
                layer(x, lengths=[T + 1] * B)
            except ValueError:
                pass
        elif kind == 5:
            if layer.bidirectional or not hasattr(layer, "step"):
                layer(x[:1])
            else:
                st = None
                for t in range(3):
                    _, st = layer.step(x[t % T] if not layer.batch_first else x[:, t % T], st)
        elif kind == 6:
            if (i // (8 * len(self.layers))) % 4 == 0:
                # build and drop a layer, reload weights (packing + swap)
                fastrnn.GRU(8, 16, num_layers=2, seed=i)(x if not layer.batch_first else x.transpose(1, 0, 2))
                layer.load_state_dict(layer.state_dict())
            else:
                layer(x)
        else:
            out, _ = layer(np.asfortranarray(x.astype(np.float64)))  # dtype + layout conversion
            del out


def test_no_rss_growth_over_20000_calls():
    mix = Mix()
    for _ in range(WARMUP):
        mix.call()
    gc.collect()
    start = rss_bytes()
    samples = []
    for k in range(CALLS - WARMUP):
        mix.call()
        if k % 2500 == 0:
            gc.collect()
            samples.append(round((rss_bytes() - start) / 2**20, 2))
    gc.collect()
    grown = (rss_bytes() - start) / 2**20
    assert mix.n == CALLS
    assert grown <= LIMIT_MB, (f"RSS grew by {grown:.1f} MB over {CALLS - WARMUP} calls "
                               f"(MB after every 2500: {samples})")


def test_no_rss_growth_from_failing_loads(tmp_path):
    """Loader error paths (corrupt files) do not leak either."""
    good = tmp_path / "ok.safetensors"
    fastrnn.save(fastrnn.LSTM(4, 8, seed=0), good)
    data = good.read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(data[: len(data) - 3])

    def once():
        fastrnn.load(good)
        try:
            fastrnn.load(bad)
        except ValueError:
            pass

    for _ in range(200):
        once()
    gc.collect()
    start = rss_bytes()
    for _ in range(2000):
        once()
    gc.collect()
    grown = (rss_bytes() - start) / 2**20
    assert grown <= 4.0, f"RSS grew by {grown:.1f} MB over 2000 load pairs"


if __name__ == "__main__":  # quick manual run: python tests/test_memory.py
    sys.exit(pytest.main([__file__, "-q"]))


def test_release_memory_frees_what_calls_keep(projection_chunk):
    """A large call's working memory stays for the next call (in this thread and in
    another) until release_memory, which frees it, says how much, and leaves every
    later call's result unchanged."""
    import threading
    projection_chunk._set_projection_chunk(-1)   # the projection's buffer whole
    layer = fastrnn.GRU(64, 256, seed=0)   # GRU: its projection buffer is T x B x 3H floats
    x = np.random.default_rng(0).standard_normal((200, 128, 64)).astype(np.float32)
    ref = layer(x)[0]
    fastrnn.release_memory()
    gc.collect()
    base = rss_bytes()
    out = {}
    worker = threading.Thread(target=lambda: out.setdefault("y", layer(x)[0]))
    worker.start()
    worker.join()   # (a thread that has exited freed its own)
    layer(x)
    kept = rss_bytes() - base
    freed = fastrnn.release_memory()
    assert freed >= 200 * 128 * 3 * 256 * 4, freed
    assert kept >= 0.8 * freed, (kept, freed)        # it was resident until now
    assert base - rss_bytes() + kept >= 0.8 * freed   # and is returned to the system
    assert fastrnn.release_memory() == 0              # nothing left to free
    np.testing.assert_array_equal(out["y"], ref)
    np.testing.assert_array_equal(layer(x)[0], ref)


def test_release_memory_returns_mid_sized_workspaces_to_the_system(projection_chunk):
    """A workspace below 32 MiB after a larger array was freed: glibc would have carved
    it from its heap (its mmap threshold rises with each large free) and kept it there
    after free(); release_memory must still give it back."""
    projection_chunk._set_projection_chunk(-1)   # the projection's buffer whole
    layer = fastrnn.GRU(64, 256, seed=0)   # a workspace of ~20 MB
    x = np.random.default_rng(0).standard_normal((50, 128, 64)).astype(np.float32)
    fastrnn.release_memory()
    tmp = np.ones(30 << 18, np.float32)    # 30 MiB, mmapped by malloc and freed
    del tmp
    layer(x)
    before = rss_bytes()
    freed = fastrnn.release_memory()
    assert freed >= 50 * 128 * 3 * 256 * 4, freed
    assert before - rss_bytes() >= 0.8 * freed, (before - rss_bytes(), freed)


def _minor_faults():
    import resource
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt


@pytest.mark.parametrize("cell, bidirectional, batch", [("LSTM", False, 1), ("GRU", True, 3), ("RNN", False, 2)])
def test_reserve_maps_what_the_call_needs(projection_chunk, cell, bidirectional, batch):
    """reserve(T, B) keeps exactly the working memory a T x B call would keep (so the
    sizing is the call's own), and layers built afresh keep a 128-step batch-1 call's."""
    projection_chunk._set_projection_chunk(-1)   # the projection's buffer whole
    layer = getattr(fastrnn, cell)(24, 96, num_layers=2, bidirectional=bidirectional, seed=0)
    x = np.random.default_rng(0).standard_normal((300, batch, 24)).astype(np.float32)
    fastrnn.release_memory()
    layer(x)
    by_call = fastrnn.release_memory()
    layer.reserve(300, batch)
    assert fastrnn.release_memory() == by_call
    layer(x[:128, :1])
    by_short = fastrnn.release_memory()
    assert by_short < by_call
    getattr(fastrnn, cell)(24, 96, num_layers=2, bidirectional=bidirectional, seed=0)
    assert fastrnn.release_memory() == by_short


def test_reserve_spares_the_first_call_its_page_faults(projection_chunk):
    """After reserve, the first call of that size takes (almost) no page faults in the
    calling thread; without it, one per 4 KiB page of its working memory."""
    resource = pytest.importorskip("resource")
    if not hasattr(resource, "RUSAGE_THREAD"):
        pytest.skip("needs RUSAGE_THREAD (Linux)")
    projection_chunk._set_projection_chunk(-1)
    layer = fastrnn.LSTM(64, 64, seed=0)
    layer.num_threads = 1
    x = np.random.default_rng(0).standard_normal((400, 1, 64)).astype(np.float32)
    layer(x)   # numpy's and Python's own first touches
    pages = 400 * 4 * 64 * 4 // 4096   # the projection buffer alone: 100 pages (< 2 MiB: small pages)
    faults = {}
    for reserved in (False, True, False, True):
        fastrnn.release_memory()
        if reserved:
            layer.reserve(400)
        f0 = _minor_faults()
        layer(x)
        faults.setdefault(reserved, []).append(_minor_faults() - f0)
    assert min(faults[False]) >= pages, faults
    assert max(faults[True]) <= min(faults[False]) - pages, faults


def test_reserve_rejects_bad_sizes():
    layer = fastrnn.GRU(8, 16, seed=0)
    for steps, batch in ((-1, 1), (1, -1), (2 ** 31, 1), (1, 2 ** 31)):
        with pytest.raises(ValueError, match="steps and batch"):
            layer.reserve(steps, batch)
    with pytest.raises(TypeError):
        layer.reserve(1.5)
    for steps, batch in ((0, 0), (0, 5), (5, 0)):
        layer.reserve(steps, batch)   # nothing to map
