"""Tiny randomly initialised checkpoints of the classes wardround runs in production.

No SigLIP or Gemma 3 weights ship on PyPI, so the MedSigLIP and MedGemma code paths are
exercised (by the tests and by `wardround doctor`) with models of the same classes built from
configs and saved with `save_pretrained`, then loaded exactly as a local snapshot of
`google/medsiglip-448` or `google/medgemma-4b-it` would be:

- `make_tiny_siglip`: a 32-d `SiglipModel`, a SigLIP image processor and a word-level tokenizer.
- `make_tiny_gemma3`: a `Gemma3ForConditionalGeneration` (SigLIP vision tower, 4 image tokens
  per image) with a `Gemma3Processor` and a Gemma-style chat template.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TINY_DIM = 32
TINY_IMAGE_SIZE = 32
TINY_TEXT_TOKENS = 16
TINY_IMAGE_TOKENS = 4
WORDS = [
    "a", "an", "the", "of", "with", "and", "chest", "x-ray", "radiograph", "ct", "scan",
    "head", "brain", "mri", "shoulder", "ultrasound", "echo", "heart", "retina", "fundus",
    "photograph", "slide", "tissue", "bone", "liver", "kidney", "lesion", "normal",
]  # fmt: skip
GEMMA_SPECIAL = [
    "<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>",
    "<start_of_image>", "<end_of_image>", "<image_soft_token>",
]  # fmt: skip
GEMMA_WORDS = ["user", "model", "what", "is", "this", "image", "be", "brief", "?", ".", *WORDS]
# Gemma 3's turn format; an image part becomes <start_of_image>, which the processor expands.
GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% set role = 'model' if m['role'] == 'assistant' else 'user' %}"
    "<start_of_turn>{{ role }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for p in m['content'] %}{% if p['type'] == 'image' %} <start_of_image> "
    "{% elif p['type'] == 'text' %}{{ p['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def image_processor(family: str, **kwargs: Any) -> Any:
    """The PIL-backed image processor (no torchvision needed), under either release's name."""
    import transformers

    cls = getattr(transformers, f"{family}ImageProcessorPil", None)
    return (cls or getattr(transformers, f"{family}ImageProcessor"))(**kwargs)


def _word_tokenizer(vocab: dict[str, int], special: list[str], **kwargs: Any) -> Any:
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", **kwargs)


def _tiny_layers(heads: int = 4) -> dict[str, int]:
    """The size of every tiny tower, text or vision: two TINY_DIM-wide layers."""
    return {
        "hidden_size": TINY_DIM,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": heads,
    }


def _vision_config(image_size: int = TINY_IMAGE_SIZE) -> dict[str, int]:
    return {"image_size": image_size, "patch_size": 8, **_tiny_layers()}


def make_tiny_siglip(
    directory: Path, seed: int = 0, image_size: int = TINY_IMAGE_SIZE, patch_size: int = 8
) -> Path:
    """Write a SigLIP checkpoint shaped like MedSigLIP but 32-d to `directory`; return it.

    `image_size=448, patch_size=32` preprocesses exactly as much as MedSigLIP-448 does.
    """
    import torch
    from transformers import SiglipConfig, SiglipModel, SiglipProcessor

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    vocab = {"<pad>": 0, "<unk>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    config = SiglipConfig(
        text_config={
            "vocab_size": len(vocab),
            **_tiny_layers(),
            "max_position_embeddings": TINY_TEXT_TOKENS,
            "projection_size": TINY_DIM,
            "pad_token_id": 0,
            "bos_token_id": 1,
            "eos_token_id": 2,
        },
        vision_config={**_vision_config(image_size), "patch_size": patch_size},
    )
    SiglipModel(config).eval().save_pretrained(directory)
    tokenizer = _word_tokenizer(
        vocab, ["<pad>", "</s>"], pad_token="<pad>", eos_token="</s>",
        model_max_length=TINY_TEXT_TOKENS,
    )  # fmt: skip
    images = image_processor(
        "Siglip",
        size={"height": image_size, "width": image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    SiglipProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(directory)
    return directory


def make_tiny_gemma3(directory: Path, seed: int = 0) -> Path:
    """Write a MedGemma-4B-shaped (but 32-d) multimodal checkpoint to `directory`; return it."""
    import torch
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    vocab = {t: i for i, t in enumerate(GEMMA_SPECIAL + GEMMA_WORDS)}
    config = Gemma3Config(
        text_config={
            "vocab_size": len(vocab),
            **_tiny_layers(heads=2),
            "num_key_value_heads": 1,
            "head_dim": 16,
            "sliding_window": 8,
            "max_position_embeddings": 256,
            **{"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2},
        },
        vision_config=_vision_config(),
        mm_tokens_per_image=TINY_IMAGE_TOKENS,
        boi_token_index=vocab["<start_of_image>"],
        eoi_token_index=vocab["<end_of_image>"],
        image_token_index=vocab["<image_soft_token>"],
    )
    Gemma3ForConditionalGeneration(config).eval().save_pretrained(directory)
    tokenizer = _word_tokenizer(
        vocab,
        GEMMA_SPECIAL,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        extra_special_tokens={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
    )
    images = image_processor(
        "Gemma3",
        size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    Gemma3Processor(
        image_processor=images,
        tokenizer=tokenizer,
        chat_template=GEMMA3_TEMPLATE,
        image_seq_length=TINY_IMAGE_TOKENS,
    ).save_pretrained(directory)
    return directory
