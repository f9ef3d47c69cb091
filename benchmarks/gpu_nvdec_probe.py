"""How fast the GPU's own video decoder (NVDEC, through PyNvVideoCodec) decodes the 15 s
1080p clip, against PyAV on the CPU, on the GPU machine. Not part of the pipeline: it
measures whether decoding on the GPU could lift the whole analysis's ceiling.

    python benchmarks/gpu_nvdec_probe.py --clip .gpu-e2e/clip-1080p.mp4
(PyNvVideoCodec and PyAV carried as wheels; the driver's libnvcuvid must be present.)
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clip", required=True)
    path = parser.parse_args().clip
    import av
    import PyNvVideoCodec as nvc

    print("PyNvVideoCodec", nvc.__version__, "on", torch.cuda.get_device_name(0))

    def decoder() -> object:
        return nvc.SimpleDecoder(path, gpu_id=0, use_device_memory=True,
                                 output_color_type=nvc.OutputColorType.RGB)

    dec = decoder()
    n = len(dec)  # type: ignore[arg-type]
    sampled = list(range(0, n, 15))  # 2 frames per second of a 30 fps clip
    for _ in range(3):
        torch.cuda.synchronize()
        t = time.perf_counter()
        frames = [torch.from_dlpack(f) for f in dec.get_batch_frames_by_index(sampled)]  # type: ignore[attr-defined]
        torch.cuda.synchronize()
        print(f"NVDEC, {len(sampled)} sampled frames (on the GPU, RGB): "
              f"{time.perf_counter() - t:.3f} s")
    t = time.perf_counter()
    every = decoder()[0:n]  # type: ignore[index]
    torch.cuda.synchronize()
    print(f"NVDEC, all {len(every)} frames: {time.perf_counter() - t:.3f} s")
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        t = time.perf_counter()
        ref = [f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(stream))
               if i in sampled]
        print(f"PyAV (CPU, all cores), all frames decoded, {len(ref)} converted: "
              f"{time.perf_counter() - t:.3f} s")
    diff = np.abs(frames[5].cpu().numpy().astype(int) - ref[5].astype(int))
    print(f"NVDEC RGB against PyAV rgb24: mean |diff| {diff.mean():.2f}, max {diff.max()}")

    def one() -> None:
        decoder().get_batch_frames_by_index(sampled)  # type: ignore[attr-defined]

    for k in (4, 16):
        threads = [threading.Thread(target=one) for _ in range(k)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        print(f"NVDEC, {k} clips at once: {k / (time.perf_counter() - t):.2f} clips/s")


if __name__ == "__main__":
    main()
