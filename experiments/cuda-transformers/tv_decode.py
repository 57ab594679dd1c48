"""The peer for gpu-bench's nvjpeg step: torchvision's batched JPEG decode of the same files on
the GPU (nvJPEG underneath), into device memory and read back to the host, and its CPU decode
(libjpeg-turbo) with torch's threads; images/s and ms per round of IN_FLIGHT images.

    python tv_decode.py JPEG_DIR [IN_FLIGHT=256] [ROUNDS=40]
"""

import pathlib
import sys
import time

import torch
import torchvision
from torchvision.io import decode_jpeg


def timed(label, n, rounds, fn):
    times = []
    for r in range(rounds + 3):
        t = time.perf_counter()
        fn()
        if r >= 3:
            times.append(time.perf_counter() - t)
    times.sort()
    mean = sum(times) / len(times)
    print(f"| {label} | {n / mean:.0f} | {times[len(times) // 2] * 1e3:.2f} | {times[int((len(times) - 1) * 0.99)] * 1e3:.2f} |")


def main():
    folder, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 256
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 40
    files = sorted(p for p in pathlib.Path(folder).iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))[:n]
    data = [torchvision.io.read_file(str(p)) for p in files]
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {torch.get_num_threads()} threads")
    print("| side | images/s | ms per round p50 | ms per round p99 |")
    print("|------|----------|------------------|------------------|")

    def gpu():
        decode_jpeg(data, device="cuda")
        torch.cuda.synchronize()

    def gpu_back():
        out = decode_jpeg(data, device="cuda")
        [o.cpu() for o in out]

    timed("torchvision decode_jpeg, cuda (batched list)", len(data), rounds, gpu)
    timed("torchvision decode_jpeg, cuda, read back", len(data), rounds, gpu_back)
    timed("torchvision decode_jpeg, cpu (one call a file)", len(data), rounds, lambda: [decode_jpeg(d) for d in data])


if __name__ == "__main__":
    main()
