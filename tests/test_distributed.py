"""DDP under torchrun: 2 gloo ranks on CPU train exactly what one process trains; rank 0 alone
writes; a rank that dies ends the job with a message and no half-written run."""
import json
import os
import re
import queue
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from bharateo.training import distributed
from bharateo.errors import DistributedError
from bharateo.models.notebook import ModelConfig
from bharateo.training.experiment import RunConfig
from bharateo.storage.chipstore import build_store
from bharateo.training.loop import StepMetrics, TrainConfig
from tests.support.s2_fixtures import SAHARA, SCENE_DIR, sahara_labels, scene_folder
from tests.support.stores import CHIPS, S2_CHIPS, make_rois
from tests.support.waiting import HANG_GUARD_S

REPO = Path(__file__).resolve().parents[1]
# 11 chips in batches of 5: the 2 ranks take 3 + 2 chips, and the last batch of 1 chip leaves
# rank 1 with nothing (it runs a zero-weight stand-in); region 'a' holds no-data patches
STORE_CHIPS = replace(CHIPS, n_chips=11, n_holdout_chips=4)
CONFIG = RunConfig(model=ModelConfig(embed_dim=32, depth=1, heads=2),
                   train=TrainConfig(epochs=2, batch_size=5, seed=7))
STEP_KEYS = ("loss", "rec", "esa", "rec_mae", "esa_acc")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("ddp") / "chips", make_rois(), STORE_CHIPS,
                       shard_size=4)


@pytest.fixture(scope="module")
def s2_store(tmp_path_factory):
    """A Sentinel-2 4-band store of 11 chips (the real shared crop, fixture labels), as `chips
    build --source s2-4band` cuts it: its reflectance and band statistics train on every rank."""
    from bharateo.training.experiment import load_rois

    if not SCENE_DIR.is_dir():
        pytest.skip("needs ../shared/data/sentinel2")
    root = tmp_path_factory.mktemp("ddp-s2")
    sahara_labels(root / "wc")
    with pytest.MonkeyPatch.context() as env:  # a module fixture: no per-test monkeypatch
        env.setenv("BHARATEO_S2_DIR", str(scene_folder(root / "s2")))
        env.setenv("BHARATEO_WORLDCOVER_DIR", str(root / "wc"))
        env.delenv("BHARATEO_S2_STAC_URL", raising=False)
        chips = replace(S2_CHIPS, n_chips=11, n_holdout_chips=4, min_classes=1)
        rois = load_rois((SAHARA,), chips=chips, use_cache=False)
        return build_store(root / "chips", rois, chips, shard_size=4)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, world, port, folder, out, checkpoints, device="cpu", weighting="off"):
    """One rank, started the way torchrun starts it (env:// variables), as torch.mp.spawn runs it."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      BHARATEO_CHECKPOINT_DIR=checkpoints)
    torch.set_num_threads(1)
    ranks = distributed.join(device)
    config = replace(CONFIG, train=replace(CONFIG.train, device=device,
                                           class_weighting=weighting))
    steps = []
    try:  # every rank is given the name: only rank 0 may write
        result = distributed.train_from_store(config, folder, name="ddp", on_event=steps.append,
                                              ranks=ranks)
    finally:
        ranks.close()
    torch.save({"steps": [[getattr(e, k) for k in STEP_KEYS] for e in steps
                          if isinstance(e, StepMetrics)],
                "returned": None if result is None else str(result.path),
                "weights": None if result is None else result.model.state_dict()},
               Path(out) / f"rank{rank}.pt")


@pytest.mark.parametrize("kind,weighting", [("store", "off"), ("s2_store", "off"),
                                            ("store", "inverse")])
def test_two_gloo_ranks_match_one_process_and_only_rank0_writes(kind, weighting, request, tmp_path,
                                                                isolated_env):
    """Palette RGB and Sentinel-2 stores alike (a Sentinel-2 store's ranks normalise its
    reflectance with its band statistics, which rank 0 saves with the run); with class weights
    too (each rank's weighted patch loss is weighed by its share of the batch's class weights)."""
    store = request.getfixturevalue(kind)
    one = []
    config = replace(CONFIG, train=replace(CONFIG.train, class_weighting=weighting))
    reference = distributed.train_from_store(config, store, on_event=one.append)
    one_steps = torch.tensor([[getattr(e, k) for k in STEP_KEYS] for e in one
                              if isinstance(e, StepMetrics)])
    assert len(one_steps) == 2 * 3  # 3 steps an epoch: 5 + 5 + 1 chips
    mp.spawn(_rank_main, args=(2, free_port(), str(store), str(tmp_path),
                               str(isolated_env["checkpoints"]), "cpu", weighting), nprocs=2,
             join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for got in (rank0, rank1):  # every rank sees the global batch's numbers
        assert torch.allclose(torch.tensor(got["steps"]), one_steps, rtol=1e-5, atol=1e-6)
    d = CONFIG.model.embed_dim
    for name, value in reference.model.state_dict().items():
        got = rank0["weights"][name]
        if name.endswith("in_proj_bias"):
            # The key bias adds q.b to every score of a row, which softmax cancels: its true
            # gradient is 0, so what it gets is rounding noise, and AdamW's m / sqrt(v) turns
            # noise into steps of up to lr either way. Only that bound can be asserted.
            steps = len(one_steps)
            assert (got[d:2 * d] - value[d:2 * d]).abs().max() <= 2 * CONFIG.train.lr * steps
            got, value = torch.cat([got[:d], got[2 * d:]]), torch.cat([value[:d], value[2 * d:]])
        assert torch.allclose(got, value, rtol=1e-4, atol=1e-5), name
    assert rank1["returned"] is None and rank1["weights"] is None
    runs = [p.name for p in isolated_env["checkpoints"].iterdir()]
    assert runs == ["ddp"] and rank0["returned"].endswith("ddp")
    assert sorted(os.listdir(isolated_env["checkpoints"] / "ddp")) == [
        "config.json", "history.json", "metrics.json", "model.pt"]
    saved = json.loads((isolated_env["checkpoints"] / "ddp" / "config.json").read_text())
    stats = reference.train_chips.band_stats
    assert saved.get("band_stats") == (stats.to_dict() if stats else None)
    assert saved["model"]["in_chans"] == reference.train_chips.channels


def test_rank_slices_cover_every_batch():
    for world in (1, 2, 3, 8):
        for batch in range(0, 20):
            parts = [distributed.RankGroup(r, world, torch.device("cpu"), "gloo").part(batch)
                     for r in range(world)]
            sizes = [p.stop - p.start for p in parts]
            assert [i for p in parts for i in range(p.start, p.stop)] == list(range(batch))
            assert max(sizes) - min(sizes) <= 1


def test_bad_rank_environment_is_refused(monkeypatch):
    assert distributed.join() is None  # no torchrun: one plain process
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(DistributedError, match="start distributed training with torchrun"):
        distributed.join()
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(DistributedError, match="impossible"):
        distributed.join()
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(DistributedError, match="cpu .gloo. or cuda"):
        distributed.join("tpu")
    monkeypatch.setenv("BHARATEO_DIST_TIMEOUT_S", "soon")
    with pytest.raises(DistributedError, match="BHARATEO_DIST_TIMEOUT_S"):
        distributed.join("cpu")


def test_killing_one_rank_ends_the_job_with_a_message_and_no_run(store, isolated_env):
    env = {**os.environ, "PYTHONPATH": str(REPO), "BHARATEO_DIST_TIMEOUT_S": "60"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "bharateo", "train", "--run-name", "killed", "--chips-dir", str(store),
               "--embed-dim", "32", "--depth", "1", "--heads", "2", "--epochs", "500",
               "--batch-size", "2", "--quiet"]
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [*map(lines.put, proc.stdout), lines.put(None)],
                              daemon=True)  # None: the end of torchrun's output
    reader.start()
    seen, pid = [], None
    try:
        while not any(l.startswith("epoch 01") for l in seen):  # the event: an epoch finished
            try:
                line = lines.get(timeout=HANG_GUARD_S)  # (a hang guard)
            except queue.Empty:
                line = None
            assert line is not None, "no epoch finished:\n" + "".join(seen)
            seen.append(line)
        # Search the whole text: two ranks' banners can share a line when their writes interleave.
        pid = int(re.search(r"rank 1/2 pid (\d+)", "".join(seen)).group(1))
        assert (isolated_env["checkpoints"] / "killed" / ".reserved").exists()  # rank 0 reserved
        os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=HANG_GUARD_S)
        reader.join(timeout=HANG_GUARD_S)  # every line up to EOF
        seen += [line for line in iter(lines.get_nowait, None)]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = "".join(seen)
    assert proc.returncode != 0, text
    assert "local_rank: 1" in text and "SIGKILL" in text, text  # torchrun names the dead rank
    assert ("rank 0: stopped because another rank failed" in text
            or "rank 0: stopped by signal SIGTERM" in text), text  # rank 0 says why it stopped
    frames = [l for l in seen if l.lstrip().startswith("File ") or "]:   File " in l]
    assert not [l for l in frames if "bharateo" in l], text  # no traceback from our ranks
    assert list(isolated_env["checkpoints"].iterdir()) == [], text  # no run, nor a reservation


SIGTERM_AT = {
    # torchrun's SIGTERM to rank 0 between the marker's removal and the folder's: the release
    # swallowed the handler's error and left an empty checkpoints/killed (issue 24, under load)
    "the release": lambda monkeypatch, kill: monkeypatch.setattr(
        Path, "rmdir", lambda self, rmdir=Path.rmdir: (
            self.name == "killed" and kill(), rmdir(self))[1]),
    # ... or while rank 0 prints why it stopped: a traceback from the handler
    "the message": lambda monkeypatch, kill: monkeypatch.setattr(
        "bharateo.cli.print", lambda *a, **k: (
            str(a[0]).startswith("error:") and kill(), print(*a, **k)), raising=False),
}


@pytest.mark.parametrize("when", list(SIGTERM_AT))
def test_a_sigterm_while_rank_0_is_ending_cuts_nothing_short(store, isolated_env, monkeypatch,
                                                              capsys, when):
    """Rank 0 has seen the other rank's death (its collective failed) and is ending when
    torchrun's SIGTERM comes: the reservation is still released whole and the message printed,
    without a traceback. In one process: the SIGTERM is sent where the race put it."""
    from bharateo import cli

    def other_rank_failed(*args, **kwargs):
        raise DistributedError("rank 0: stopped because another rank failed or stopped answering")

    monkeypatch.setattr(distributed, "train_from_store", other_rank_failed)
    SIGTERM_AT[when](monkeypatch, lambda: os.kill(os.getpid(), signal.SIGTERM))
    previous = signal.getsignal(signal.SIGTERM)
    try:
        code = cli.main(["train", "--run-name", "killed", "--chips-dir", str(store),
                         "--embed-dim", "32", "--depth", "1", "--heads", "2", "--quiet"])
    finally:
        signal.signal(signal.SIGTERM, previous)
    err = capsys.readouterr().err
    assert code == 2 and "another rank failed" in err and "Traceback" not in err, err
    assert list(isolated_env["checkpoints"].iterdir()) == []  # no run, nor an empty folder


def gpu_kinds():
    return [pytest.param("cuda", marks=pytest.mark.skipif(
                not torch.cuda.is_available(), reason="no CUDA GPU on this machine")),
            pytest.param("mps", marks=pytest.mark.skipif(
                not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()),
                reason="no Apple MPS device on this machine"))]


@pytest.mark.parametrize("kind", ["store", "s2_store"])
@pytest.mark.parametrize("device", gpu_kinds())
def test_gpu_training_from_a_store_matches_cpu(kind, request, device):
    """The GPU path: the same store (palette RGB or Sentinel-2), seed and global batch on a GPU
    give the CPU's losses (fp32; GPU kernels sum in another order, hence the looser tolerance)."""
    store = request.getfixturevalue(kind)
    runs = {}
    for where in ("cpu", device):
        steps = []
        config = replace(CONFIG, train=replace(CONFIG.train, device=where))
        runs[where] = distributed.train_from_store(config, store, on_event=steps.append), steps
    losses = {k: torch.tensor([e.loss for e in steps if isinstance(e, StepMetrics)])
              for k, (_, steps) in runs.items()}
    assert torch.allclose(losses[device], losses["cpu"], rtol=1e-3, atol=1e-4)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs (nccl)")
def test_two_nccl_ranks_match_one_process(store, tmp_path, isolated_env):
    one = []
    distributed.train_from_store(CONFIG, store, on_event=one.append)
    mp.spawn(_rank_main, args=(2, free_port(), str(store), str(tmp_path),
                               str(isolated_env["checkpoints"]), "cuda"), nprocs=2, join=True)
    got = torch.load(tmp_path / "rank0.pt", weights_only=True)
    want = [[getattr(e, k) for k in STEP_KEYS] for e in one if isinstance(e, StepMetrics)]
    assert torch.allclose(torch.tensor(got["steps"]), torch.tensor(want), rtol=1e-3, atol=1e-4)
