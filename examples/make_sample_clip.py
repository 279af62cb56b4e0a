#!/usr/bin/env python
"""Render the sample clip, the README's sample input and the web demo's, with the package's synthetic renderer.

    python examples/make_sample_clip.py            # writes src/normalcrafter_pipeline/assets/sample_clip.mp4

The clip is package data (installed with the package); `examples/sample_clip.mp4` links to it.

A camera orbits a few textured spheres and boxes on a floor; 40 frames at 10 fps, 256x448 (not a multiple of 64,
so the pipeline's padding is exercised). Seeded, so the clip is the same every time.
"""

import argparse
import os

import imageio.v2 as imageio

from normalcrafter_pipeline.training.renderer import render_clip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    assets = os.path.join(os.path.dirname(__file__), os.pardir, "src", "normalcrafter_pipeline", "assets")
    parser.add_argument("--output", default=os.path.normpath(os.path.join(assets, "sample_clip.mp4")))
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=448)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    clip = render_clip(None, num_frames=args.frames, height=args.height, width=args.width, seed=args.seed)
    temporary = args.output + ".partial.mp4"
    with imageio.get_writer(temporary, fps=args.fps, codec="libx264", quality=7, macro_block_size=1) as writer:
        for frame in clip["rgb"]:
            writer.append_data(frame)
    os.replace(temporary, args.output)
    print(f"wrote {args.output} ({os.path.getsize(args.output) / 1024:.0f} KiB, {args.frames} frames)")


if __name__ == "__main__":
    main()
