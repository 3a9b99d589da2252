"""export --fp16: half-precision weights, half the bytes, the same picture (tiny profile)."""

import pytest
import torch

from kdutils import metrics as M
from kdutils import pipeline as P


@pytest.mark.slow
def test_an_fp16_export_is_half_the_size_and_draws_the_same_picture(cfg, student_dir, tmp_path):
    from diffusers import StableDiffusionPipeline
    from safetensors import safe_open

    def weights(folder):
        return sorted(folder.rglob("*.safetensors"))

    full = P.export_pipeline(cfg, student_dir, tmp_path / "fp32")
    half = P.export_pipeline(cfg, student_dir, tmp_path / "fp16", fp16=True)
    assert [p.relative_to(half) for p in weights(half)] == [p.relative_to(full) for p in weights(full)]
    for path in weights(half):
        with safe_open(str(path), "pt") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}, path
    size = {folder: sum(p.stat().st_size for p in weights(folder)) for folder in (full, half)}
    assert 0.49 < size[half] / size[full] < 0.52
    assert '"saved_dtype": "float16"' in (half / "kdsd_export.json").read_text()
    with P.quiet_encoder_swap():  # a CPU reads the fp16 folder back in fp32
        reloaded = StableDiffusionPipeline.from_pretrained(str(half), dtype=torch.float32)
    pipe = P.korean_pipeline(cfg, student_dir)
    latents = P.fixed_latents(pipe, cfg, 1)
    a = P.generate(pipe, ["빨간 원"], latents, num_inference_steps=2)[0]
    b = P.generate(reloaded, ["빨간 원"], latents, num_inference_steps=2)[0]
    assert M.psnr(a, b) > 35, "fp16 weights change the picture only by rounding"
