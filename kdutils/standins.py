"""The ``class`` profile at full size on a CPU, with offline stand-ins: ``python -m kdutils sizing --check`` (slow).

``kdutils.sizing`` derives the profile's minutes and GPU memory by arithmetic; this module measures
what a CPU can: activation peaks of SD v1.4's UNet and VAE (``measure_sampling``), and a run of every
experiment through the class profile's code path with random full-size models (``standin_check``).
"""

from __future__ import annotations

from .sizing import GIB, HIDDEN, MAX_LENGTH, split_sizes, teacher_cache_path

SD_UNET = dict(sample_size=64, in_channels=4, out_channels=4,
               down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
               up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
               block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768,
               attention_head_dim=8)  # SD v1.4's unet/config.json (diffusers' defaults but the cross-attention width)
SD_VAE = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
              up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
              latent_channels=4, sample_size=512)  # SD v1.4's vae/config.json


def measure_sampling(image_size: int = 512, unet_batch: int = 4) -> dict[str, float]:
    """Activation GiB of SD v1.4's UNet (one call, ``unet_batch`` latents, sliced attention) and VAE (one image),
    and the UNet's GFLOP per latent, on the CPU in bf16 (the bytes of CUDA's fp16), full size, random weights."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    from .bench import LiveTensorBytes

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD_UNET).to(torch.bfloat16).eval()
    vae = AutoencoderKL(**SD_VAE).to(torch.bfloat16).eval()
    # what sampling_memory.fit_memory turns on under 16 GB; its matmuls are also what torch's FLOP counter sees (it
    # misses the CPU's fused attention kernel: 677 instead of 803 GFLOP a UNet call)
    unet.set_attention_slice("auto")
    side = image_size // 8
    out = {"unet_params": sum(p.numel() for p in unet.parameters()),
           "vae_params": sum(p.numel() for p in vae.parameters())}
    with torch.no_grad():
        x = torch.randn(1, 4, side, side, dtype=torch.bfloat16)
        c = torch.randn(1, MAX_LENGTH, HIDDEN, dtype=torch.bfloat16)
        counter = FlopCounterMode(display=False)
        with counter:
            unet(x, 999, encoder_hidden_states=c)
        out["unet_gflops_per_sample"] = counter.get_total_flops() / 1e9
        x = torch.randn(unet_batch, 4, side, side, dtype=torch.bfloat16)
        c = torch.randn(unet_batch, MAX_LENGTH, HIDDEN, dtype=torch.bfloat16)
        with LiveTensorBytes([*unet.parameters(), *unet.buffers(), x, c]) as live:
            unet(x, 999, encoder_hidden_states=c)
        out[f"unet_act_gib_b{unet_batch}"] = (live.peak - live.base) / GIB
        z = x[:1]
        with LiveTensorBytes([*vae.parameters(), *vae.buffers(), z]) as live:
            vae.decode(z)
        out["vae_decode_act_gib"] = (live.peak - live.base) / GIB
        counter = FlopCounterMode(display=False)
        with counter:
            vae.decode(z)
        out["vae_decode_gflops"] = counter.get_total_flops() / 1e9
        image = torch.randn(1, 3, image_size, image_size, dtype=torch.bfloat16)
        with LiveTensorBytes([*vae.parameters(), *vae.buffers(), image]) as live:
            vae.encode(image)
        out["vae_encode_act_gib"] = (live.peak - live.base) / GIB
    return out


def clip_bpe_file():
    """The real CLIP BPE merges that the PyPI package open-clip-torch ships, or None when it is not installed.

    Found without importing open_clip (which needs torchvision).
    """
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    return path if path.exists() else None


def clip_tokenizer_from_bpe(path, folder) -> None:
    """Write SD's CLIP tokenizer (49,408 tokens) to ``folder`` from open_clip's merges file, as OpenAI built it."""
    import gzip
    import json
    from pathlib import Path

    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    lines = gzip.open(path, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    tokenizer = CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"),
                              model_max_length=MAX_LENGTH, pad_token="<|endoftext|>")
    tokenizer.save_pretrained(str(folder))


def build_standins(root) -> dict[str, str]:
    """Offline full-size stand-ins in ``root``: SD v1.4's tokenizer (the real CLIP BPE from open-clip-torch)
    and text encoder (ViT-L/14 text config, random weights), a klue/roberta-small-shaped student (its config,
    random weights, a WordPiece vocabulary learned from the course's texts), and a file of pairs (the
    course's corpus and the toy world's caption translations). Raises ImportError without open-clip-torch."""
    from pathlib import Path

    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, RobertaConfig, RobertaModel

    from . import tiny
    from .bench import CLIP_L14_TEXT, KLUE_ROBERTA_SMALL
    from .corpus import read_bundled
    from .data import read_toyworld

    bpe = clip_bpe_file()
    if bpe is None:
        raise ImportError("the stand-in check needs the real CLIP BPE vocabulary: pip install open-clip-torch")
    root = Path(root)
    sd, student, pairs = root / "sd-v1-4", root / "roberta-small", root / "pairs.tsv"
    if not (sd / "DONE").exists():
        clip_tokenizer_from_bpe(bpe, sd / "tokenizer")
        torch.manual_seed(0)
        CLIPTextModel(CLIPTextConfig(**CLIP_L14_TEXT)).save_pretrained(str(sd / "text_encoder"))
        (sd / "DONE").write_text("")
    if not (student / "DONE").exists():
        student.mkdir(parents=True, exist_ok=True)
        tokenizer = tiny.build_student_tokenizer(student)
        torch.manual_seed(1)
        RobertaModel(RobertaConfig(**KLUE_ROBERTA_SMALL)).save_pretrained(str(student))
        tokenizer.save_pretrained(str(student))
        (student / "DONE").write_text("")
    if not pairs.exists():
        rows = [(r["ko"], r["en"]) for r in read_bundled() + read_toyworld()]
        pairs.write_text("ko\ten\n" + "".join(f"{ko}\t{en}\n" for ko, en in rows), encoding="utf-8")
    return {"sd_id": str(sd), "student_id": str(student), "data_source": str(pairs)}


def standin_check(root, *, num_pairs: int = 160, stop_after: int = 2, experiments=("clip", "roberta", "roberta_pooler"),
                  say=print) -> dict:
    """Run the ``class`` profile at full size on the CPU with offline stand-ins (slow: minutes).

    Data preparation on the whole stand-in corpus (timed per 1,000 pairs), then per experiment a run of
    ``num_pairs`` pairs at the class's batch, learning rate and schedule: ``stop_after`` steps, a resume
    from ``last/`` to the end, evaluation at step 0, at the end and on test. The teacher cache takes the
    path the class's full pair count takes on a GPU. Returns what it measured.
    """
    import resource
    import time
    from pathlib import Path

    if clip_bpe_file() is None:
        raise ImportError("the stand-in check needs the real CLIP BPE vocabulary: pip install open-clip-torch")
    from .data import prepare_splits
    from .profiles import PROFILES, get_profile

    root = Path(root)
    started = time.perf_counter()
    ids = build_standins(root)
    result: dict = {"build_s": round(time.perf_counter() - started, 1)}
    base = PROFILES["class"]
    common = dict(ids, data_config=None, device="cpu", seed=0)
    # 1. data preparation, every stand-in pair, timed
    result.update(_standin_data(get_profile("class", **common, num_pairs=None, output_dir=str(root / "prep")), say))
    # 2. the class profile's training at full size
    full_train = split_sizes(base.num_pairs)["train"]
    result["class_teacher_cache"] = teacher_cache_path(full_train)
    cfg = get_profile("class", **common, num_pairs=num_pairs, output_dir=str(root / "run"),
                      eval_every=max(1, stop_after))
    splits = prepare_splits(cfg, rebuild=True)
    result["run_pairs"] = {k: len(v) for k, v in splits.items()}
    cache = result["class_teacher_cache"] == "cached on the GPU"
    result["runs"] = {experiment: _standin_run(cfg, experiment, splits, stop_after, cache, say)
                      for experiment in experiments}
    # 3. the training step's GPU memory at the class's batch, counted again for the smallest student
    from .bench import estimate_gpu_memory

    est = estimate_gpu_memory("roberta", base.batch_size)
    result["train_peak_gib_roberta"] = round(est["peak_gb"], 2)
    say(f"training step at batch {base.batch_size}, roberta: {est['peak_gb']:.2f} GiB of live tensors")
    result["sampling"] = {k: round(v, 3) if isinstance(v, float) else v
                          for k, v in measure_sampling(base.image_size, 2 * base.sample_batch_size).items()}
    say(f"sampling: {result['sampling']}")
    result["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def _standin_data(cfg_all, say) -> dict:
    """Prepare every stand-in pair and tokenise the training pairs for the three encoders, timed."""
    import time

    from .data import prepare_splits
    from .distill import tokenize
    from .models import load_tokenizers

    t0 = time.perf_counter()
    splits_all = prepare_splits(cfg_all, rebuild=True)
    prep_s = time.perf_counter() - t0
    n_all = sum(len(s) for s in splits_all.values())
    teacher_tok, student_tok = load_tokenizers(cfg_all)
    train = splits_all["train"]
    t0 = time.perf_counter()
    for tok, texts in ((teacher_tok, train["en"]), (student_tok, train["en"]), (student_tok, train["ko"])):
        tokenize(tok, texts, MAX_LENGTH)
    tokenize_s = time.perf_counter() - t0
    say(f"data: {n_all} pairs prepared in {prep_s:.1f} s; tokenising {len(train)} training pairs "
        f"for three encoders took {tokenize_s:.1f} s")
    return dict(prep_pairs=n_all, prep_s=round(prep_s, 1), prep_s_per_1k=round(1000 * prep_s / n_all, 2),
                tokenize_pairs=len(train), tokenize_s_per_1k=round(1000 * tokenize_s / len(train), 2))


def _standin_run(cfg, experiment: str, splits, stop_after: int, cache: bool, say) -> dict:
    """One experiment at the class's settings: stopped after ``stop_after`` steps, resumed to the end."""
    import time

    from .distill import distill
    from .models import load_student, load_teacher

    t0 = time.perf_counter()
    cfg = cfg.replace(teacher_cache_gb=cfg.teacher_cache_gb if cache else 0)
    models = (*load_teacher(cfg, device="cpu"), *load_student(cfg, experiment))
    first = distill(cfg, experiment, splits, models=models, stop_after=stop_after, progress=False)
    assert not first.finished and (first.output_dir / "last").is_dir(), "stopped early with last/ saved"
    models = (*load_teacher(cfg, device="cpu"), *load_student(cfg, experiment))
    done = distill(cfg, experiment, splits, models=models, resume=True, progress=False)
    assert done.finished and done.test_metrics is not None and (done.best_dir / "model.safetensors").exists()
    history = [h["step"] for h in done.history]
    assert history[0] == 0 and history[-1] == max(history) > stop_after, history
    run = {"steps": history[-1], "evaluated_at": history, "best_step": done.best_step,
           "val_loss_step0": round(done.history[0]["val_loss"], 3),
           "test_val_loss": round(done.test_metrics["val_loss"], 3), "seconds": round(time.perf_counter() - t0, 1)}
    say(f"{experiment}: {run}")
    return run
