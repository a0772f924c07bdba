"""Data-parallel training: 2 CPU processes (gloo) end with identical weights; rank 0 writes."""

import os
import socket

import torch
import torch.multiprocessing as mp
from test_train_chipstore import make_chip_store

TINY = dict(batch_size=2, ngf=8, ndf=8, num_d=1, n_layers_d=2, spade_hidden=16,
            vgg_weights="off", preview_every=2, val_every=0, log_every=1, device="cpu")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, store: str, run_dir: str, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from geospade.training.loop import train

    result = train(store, run_dir, steps=3, quiet=True, **TINY)
    torch.save({k: m.state_dict() for k, m in result.models.items()}
               | {"checkpoint": str(result.checkpoint)}, f"{out}/rank{rank}.pt")


def test_two_cpu_processes_end_with_identical_weights(tmp_path):
    store = make_chip_store(tmp_path / "chips", n_train=8, n_val=2, size=32)
    run_dir = tmp_path / "run"
    mp.spawn(_worker, args=(2, _free_port(), str(store), str(run_dir), str(tmp_path)), nprocs=2,
             join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for key in ("generator", "generator_ema", "discriminator"):
        for name, value in r0[key].items():
            torch.testing.assert_close(value, r1[key][name], rtol=0, atol=0, msg=f"{key}.{name}")
    # Only rank 0 wrote the checkpoint, holding the weights every rank ended with.
    assert r0["checkpoint"].endswith("checkpoint.pt") and r1["checkpoint"] == "None"
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 3
    for name, value in ckpt["generator"].items():
        torch.testing.assert_close(value, r0["generator"][name])
    # Rank 0 alone wrote the logs: one row per step, no duplicate from rank 1.
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3"]
    assert sorted(p.name for p in (run_dir / "previews").iterdir()) == ["step_0000002.png"]
