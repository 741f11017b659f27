from __future__ import annotations

import pytest
import torch

from bookgen import streams
from bookgen.streams import StreamBatcher, TokenStream
from tests.by_hand import stream_by_hand


def stream_of(*lengths: int) -> TokenStream:
    """Documents of the given lengths, with token ids equal to their global position."""
    lists, start = [], 0
    for n in lengths:
        lists.append(list(range(start, start + n)))
        start += n
    return stream_by_hand(lists, chars=start)


def test_rows_continue_across_windows_and_cover_every_token_once():
    stream = stream_of(1000)
    batcher = StreamBatcher(stream, batch_size=4, bptt=10)
    L = batcher.row_length
    assert L == (1000 - 1) // 4
    windows = list(batcher.windows(epoch=0))
    rows = torch.cat([w.inputs for w in windows]).t()  # (B, L)
    for i in range(4):
        # Row i is one contiguous piece of the text: window k+1 starts where window k stopped.
        assert rows[i].tolist() == list(range(i * L, (i + 1) * L))
    targets = torch.cat([w.targets for w in windows]).t()
    assert torch.equal(targets, rows + 1)
    # Every token is an input exactly once per epoch.
    assert sorted(rows.flatten().tolist()) == list(range(4 * L))


def test_epoch_shift_moves_cut_points_but_keeps_continuity():
    batcher = StreamBatcher(stream_of(1000), batch_size=4, bptt=10)
    starts = {e: batcher.window_starts(e, random_seed=3) for e in range(5)}
    assert starts[0][:3] == [0, 10, 20]
    assert any(starts[e][1] % 10 != 0 for e in range(1, 5))  # cut points move
    for e in range(5):
        inputs = torch.cat([w.inputs for w in batcher.windows(epoch=e, random_seed=3)])
        assert torch.equal(inputs, torch.cat([w.inputs for w in batcher.windows(epoch=0)]))
    # The shift is a pure function of (epoch, seed): a resumed run sees the same windows.
    assert batcher.window_starts(3, random_seed=3) == starts[3]


def test_state_resets_where_a_row_enters_the_next_book():
    stream = stream_of(25, 30, 45)  # books start at positions 0, 25, 55
    batcher = StreamBatcher(stream, batch_size=3, bptt=8)
    L = batcher.row_length  # 33: row 0 = 0..32, row 1 = 33..65, row 2 = 66..98
    resets = torch.cat([w.resets for w in batcher.windows()])  # (L, B)
    flagged = sorted((row * L + t) for t, row in torch.nonzero(resets).tolist())
    assert flagged == [0, 25, 55]
    # The first token of a new book is never a target of the previous book's last token.
    mask = torch.cat([w.loss_mask for w in batcher.windows()])
    targets = torch.cat([w.targets for w in batcher.windows()])
    assert set(targets[~mask].tolist()) == {25, 55}


def test_windows_can_resume_mid_epoch():
    batcher = StreamBatcher(stream_of(500), batch_size=2, bptt=7)
    all_windows = list(batcher.windows(epoch=2, random_seed=1))
    resumed = list(batcher.windows(epoch=2, random_seed=1, start=all_windows[3].start))
    assert [w.start for w in resumed] == [w.start for w in all_windows[3:]]


def test_short_text_uses_fewer_rows():
    batcher = StreamBatcher(stream_of(50), batch_size=64, bptt=10)
    assert batcher.batch_size == 4
    assert batcher.row_length >= 10


def test_windows_cut_on_the_device_equal_those_cut_on_the_host(monkeypatch):
    """`keep_on` (a GPU run's rows live on the GPU) gives the same windows, as int64 (T, B)
    contiguous tensors on that device, with the flags still on the host. The upload goes a
    piece at a time (here 7 tokens), as a memmap of a large corpus is read."""
    monkeypatch.setattr(streams, "_UPLOAD_TOKENS", 7)
    host = StreamBatcher(stream_of(300, 411, 2), batch_size=5, bptt=9)
    device = StreamBatcher(stream_of(300, 411, 2), batch_size=5, bptt=9)
    assert device.keep_on(torch.device("cpu"))
    for epoch in range(3):
        pairs = zip(host.windows(epoch, 5), device.windows(epoch, 5), strict=True)
        for a, b in pairs:
            assert b.inputs.dtype == b.targets.dtype == torch.int64
            assert b.inputs.is_contiguous() and b.targets.is_contiguous()
            assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
            assert torch.equal(a.resets, b.resets) and torch.equal(a.loss_mask, b.loss_mask)
            assert (a.start, b.resets.device.type) == (b.start, "cpu")
    assert max(int(w.inputs.max()) for w in device.windows()) > 255  # ids beyond a byte


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_windows_on_a_gpu_equal_those_cut_on_the_host():
    host = StreamBatcher(stream_of(300, 411, 2), batch_size=5, bptt=9)
    device = StreamBatcher(stream_of(300, 411, 2), batch_size=5, bptt=9)
    assert device.keep_on(torch.device("cuda"))
    for a, b in zip(host.windows(1, 5), device.windows(1, 5), strict=True):
        assert b.inputs.device.type == "cuda" and torch.equal(a.inputs, b.inputs.cpu())
        assert torch.equal(a.targets, b.targets.cpu())
