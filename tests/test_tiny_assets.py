"""The tiny profile's models: the committed toy-world SD, scorer and pretrained student; the blank student built offline."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from kdutils import tiny


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return tiny.build_all(tmp_path_factory.mktemp("tiny-a"))


def test_rebuild_is_bit_identical_and_offline(built, tmp_path, no_network):
    again = tiny.build_all(tmp_path / "tiny-b")
    first, second = _digest(built), _digest(again)
    assert any(name.endswith(".safetensors") for name in first)
    assert first == second


def test_resolve_builds_into_the_cache_and_leaves_hub_ids_alone(monkeypatch, tmp_path, no_network):
    monkeypatch.setattr("kdutils.profiles.output_root", lambda: tmp_path)
    folder = Path(tiny.resolve("tiny/roberta-small-blank"))
    assert folder.is_dir() and (folder / "config.json").exists() and folder.parent.parent == tmp_path / "cache"
    assert tiny.resolve("klue/roberta-small") == "klue/roberta-small"
    with pytest.raises(ValueError, match="unknown tiny model"):
        tiny.resolve("tiny/gpt")


def test_the_trained_models_come_with_the_repository(monkeypatch, tmp_path):
    for name in tiny.TRAINED:
        assert Path(tiny.resolve(f"tiny/{name}")) == tiny.TRAINED_DIR / name
    monkeypatch.setattr(tiny, "TRAINED_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="python -m kdutils tiny --train"):
        tiny.resolve("tiny/stable-diffusion")


def test_clip_tokenizer_falls_back_to_bytes_for_korean():
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(tiny.resolve("tiny/stable-diffusion"), subfolder="tokenizer")
    en = tok.tokenize("a red apple")
    ko = tok.tokenize("사과")
    assert "red</w>" in en  # English words learned as whole tokens
    assert len(ko) == len("사과".encode()) and tok.unk_token not in ko  # one piece per UTF-8 byte
    assert tok.decode(tok("빨간 사과").input_ids, skip_special_tokens=True) == "빨간 사과"


def test_student_tokenizer_is_laid_out_like_klue(built):
    from transformers import AutoTokenizer

    from kdutils import world

    tok = AutoTokenizer.from_pretrained(str(built / "roberta-small-blank"))
    pretrained = AutoTokenizer.from_pretrained(tiny.resolve("tiny/roberta-small"))
    assert tok.get_vocab() == pretrained.get_vocab()  # the blank student differs only in its weights
    assert (tok.cls_token_id, tok.pad_token_id, tok.sep_token_id) == (0, 1, 2)
    assert tok.model_max_length == 77
    pieces = tok.tokenize("고양이가 잔디밭에서 잔다")
    # the toy analyser's rules are rough outside the world ("고양이" ends like a particle: 고양 ##이), but nothing is lost
    assert "잔디밭" in pieces and "##에서" in pieces and tok.unk_token not in pieces
    for word in ("빨간", "동그라미", "왼쪽", "삼각형", "가운데") + world.HELD_FORMS:  # learned from the Korean corpus
        assert tok.tokenize(word) == [word]


def test_student_vocabulary_cuts_particles_and_endings_off_like_klue(built):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny.resolve("tiny/roberta-small"))
    # a noun keeps one piece whatever particle follows, so a particle the pairs never use leaves the noun known
    assert tok.tokenize("원은 좌측에 있습니다") == ["원", "##은", "좌측", "##에", "있", "##습니다"]
    assert tok.tokenize("작은 빨간원") == ["작은", "빨간", "##원"]  # a dropped space
    vocab = tok.get_vocab()
    assert not {"원은", "원이", "오른쪽에", "있는"} & set(vocab)  # no piece spans two morphemes


def test_the_morpheme_cutter_keeps_world_words_whole():
    assert tiny.korean_morphemes("세모가") == ["세모", "##가"]
    assert tiny.korean_morphemes("위쪽에는큰") == ["위쪽", "##에는", "##큰"]
    for word in ("작은", "가운데", "바다", "사과", "노란색", "hello"):
        assert tiny.korean_morphemes(word) == [word]


@pytest.mark.slow
def test_pretraining_runs_and_saves_a_loadable_encoder(tmp_path, no_network):
    from transformers import AutoModel, AutoTokenizer

    from kdutils import toymodels

    report = toymodels.pretrain_student(tmp_path / "student", toymodels.PretrainRecipe.quick(), progress=False)
    assert report["corpus_sentences"] > 300 and report["mlm_loss_last_100"] > 0
    model = AutoModel.from_pretrained(str(tmp_path / "student"))
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "student"))
    assert type(model).__name__ == "RobertaModel" and model.config.hidden_size == tiny.HIDDEN
    assert (tmp_path / "student" / "DONE").exists() and (tok.cls_token_id, tok.pad_token_id) == (0, 1)


def test_a_rebuild_keeps_a_student_of_the_same_recipe_only_when_asked(tmp_path, monkeypatch):
    import json

    from kdutils import toymodels

    recipe = toymodels.PretrainRecipe.quick()
    folder = tmp_path / "roberta-small"
    folder.mkdir()
    (folder / "DONE").write_text("toy world\n")
    (folder / "pretraining.json").write_text(json.dumps({"recipe": toymodels.asdict(recipe), "seconds": 463.5}))
    trained = []
    monkeypatch.setattr(toymodels, "pretrain_student", lambda *args: trained.append(args) or {"trained": True})
    assert toymodels._student(folder, recipe, False, keep=True) == {"recipe": toymodels.asdict(recipe),
                                                                     "seconds": 463.5, "kept": True}
    assert not trained
    assert toymodels._student(folder, recipe, False, keep=False) == {"trained": True}
    other = toymodels.PretrainRecipe(**{**toymodels.asdict(recipe), "steps": 4})
    assert toymodels._student(folder, other, False, keep=True) == {"trained": True} and len(trained) == 2


@pytest.mark.slow
def test_an_interrupted_pretraining_leaves_the_student_that_was_there(tmp_path, monkeypatch, no_network):
    from kdutils import pretrain, toymodels

    student = tmp_path / "student"
    student.mkdir()
    (student / "model.safetensors").write_text("the committed student")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pretrain, "mask_tokens", interrupted)
    with pytest.raises(KeyboardInterrupt):
        toymodels.pretrain_student(student, toymodels.PretrainRecipe.quick(), progress=False)
    assert [p.name for p in student.iterdir()] == ["model.safetensors"]
    assert (student / "model.safetensors").read_text() == "the committed student"


def test_teacher_width_matches_unet_and_student(built):
    sd = Path(tiny.resolve("tiny/stable-diffusion"))
    config = json.loads((sd / "text_encoder" / "config.json").read_text())
    unet = json.loads((sd / "unet" / "config.json").read_text())
    student = json.loads((built / "roberta-small-blank" / "config.json").read_text())
    assert config["hidden_size"] == unet["cross_attention_dim"] == student["hidden_size"]
    assert config["max_position_embeddings"] == 77


PLAIN_LOAD = """
import sys, torch
from diffusers import StableDiffusionPipeline
from transformers import AutoModel, AutoTokenizer, CLIPModel, CLIPProcessor
root, trained = sys.argv[1], sys.argv[2]
pipe = StableDiffusionPipeline.from_pretrained(trained + "/stable-diffusion")
image = pipe("a red apple", num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images
student = AutoModel.from_pretrained(trained + "/roberta-small")
tok = AutoTokenizer.from_pretrained(trained + "/roberta-small")
blank = AutoModel.from_pretrained(root + "/roberta-small-blank")
out = student(**tok(["빨간 사과"], return_tensors="pt")).last_hidden_state
scorer = CLIPModel.from_pretrained(trained + "/clip-scorer")
CLIPProcessor.from_pretrained(trained + "/clip-scorer")
assert "kdutils" not in sys.modules
print(image.shape, tuple(out.shape), type(student).__name__)
"""


@pytest.mark.slow
def test_assets_load_with_plain_libraries_in_a_fresh_process(built):
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(built)}
    result = subprocess.run([sys.executable, "-c", PLAIN_LOAD, str(built), str(tiny.TRAINED_DIR)],
                            capture_output=True, text=True,
                            env=env, cwd=built, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(1, 64, 64, 3) (1, 4, 64) RobertaModel" in result.stdout
