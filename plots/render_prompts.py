"""Images from a prompt-generator run: the first and the last evaluation's prompts drawn side by side.

    python plots/render_prompts.py runs/ppo_prompt_generator__paper__seed1000__<hash> [--model stabilityai/sd-turbo]
    python ppo_prompt_generator.py --render        # the same, right after training

Writes <run dir>/render.png (row 1: the first evaluation's prompts, row 2: the last's, the same seeds in
both rows so that only the prompts differ) and render.json (the prompts). Needs diffusers and a GPU
(Stable Diffusion on a CPU takes minutes per image); without them it says why and draws nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a file: python plots/render_prompts.py

from zyn_ppo import runio  # noqa: E402


def render_grid(run_dir: Path, model: str = "stabilityai/sd-turbo", count: int = 4, steps: int = 1,
                guidance: float = 0.0, seed: int = 1000) -> Path | None:
    """Draw the first and last evaluation's prompts (rows) into <run dir>/render.png; optional, never required."""
    try:
        from diffusers import AutoPipelineForText2Image
    except ImportError:
        print("rendering skipped: it needs the diffusers library (pip install diffusers)")
        return None
    if not torch.cuda.is_available():
        print("rendering skipped: it needs a GPU (Stable Diffusion on a CPU takes minutes per image)")
        return None
    evals = sorted(run_dir.glob("samples/eval_*.jsonl"), key=lambda p: int(p.stem.split("_")[-1]))
    if not evals:
        print(f"rendering skipped: no evaluation samples in {run_dir / 'samples'}")
        return None
    rows = []
    for path in (evals[0], evals[-1]):
        lines = runio.read_jsonl(path)
        rows.append([r["prompt"] + r["output"] for r in lines[: count]])
    try:
        pipe = AutoPipelineForText2Image.from_pretrained(model, torch_dtype=torch.float16).to("cuda")
    except (OSError, ValueError) as error:
        print(f"rendering skipped: could not load {model} ({error})")
        return None
    images = []
    for texts in rows:  # the same seeds in both rows, so only the prompts differ
        generators = [torch.Generator("cuda").manual_seed(seed + i) for i in range(len(texts))]
        images.append(pipe(prompt=texts, generator=generators, num_inference_steps=steps,
                           guidance_scale=guidance).images)
    from PIL import Image

    w, h = images[0][0].size
    grid = Image.new("RGB", (w * max(len(r) for r in images), h * len(images)), "white")
    for i, row in enumerate(images):
        for j, image in enumerate(row):
            grid.paste(image, (j * w, i * h))
    grid.save(run_dir / "render.png")
    (run_dir / "render.json").write_text(json.dumps({"rows": [evals[0].stem, evals[-1].stem], "prompts": rows},
                                                    indent=1))
    print(f"rendered {run_dir / 'render.png'} (rows: {evals[0].stem}, {evals[-1].stem}; prompts in render.json)")
    return run_dir / "render.png"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a run directory of ppo_prompt_generator.py (reads samples/eval_*.jsonl)")
    parser.add_argument("--model", default="stabilityai/sd-turbo", help="diffusers text-to-image pipeline")
    parser.add_argument("--count", type=int, default=4, help="prompts drawn from each of the two evaluations")
    parser.add_argument("--steps", type=int, default=1, help="denoising steps (sd-turbo: 1; SD 1.5: ~25)")
    parser.add_argument("--guidance", type=float, default=0.0, help="guidance scale (sd-turbo: 0; SD 1.5: ~7.5)")
    parser.add_argument("--seed", type=int, default=1000)
    args = parser.parse_args(argv)
    out = render_grid(Path(args.run_dir), args.model, args.count, args.steps, args.guidance, args.seed)
    return 0 if out is not None else 1


if __name__ == "__main__":
    sys.exit(main())
