"""Tiny randomly initialised vision models, saved the way the hub stores real ones.

Each builder writes a model and its processor (image processor + tokenizer) with
``save_pretrained`` into a folder, so the backends load them through ``from_pretrained`` exactly
as they load a hub id: the code path a user runs is the one the tests run. The models are a few
hundred kilobytes and build in well under a second; their outputs are meaningless but
deterministic (fixed seeds), which is all shape, batching and mapping tests need.

Tokenizers are hand-made so nothing is downloaded: a byte-level BPE with no merges for CLIP and
OWLv2, a character-level SentencePiece model for SigLIP, a character-level WordPiece for
Grounding DINO whose special tokens sit at BERT's ids (the model hard-codes 101, 102, 1012 and
1029 as phrase delimiters).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

#: Side of the images the tiny models take; small so a forward pass costs milliseconds.
CLIP_SIDE = 32
OWL_SIDE = 32
DINO_SIDE = 64
SAM_SIDE = 64


def _save(folder: Path, model: Any, processor: Any) -> Path:
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _seed() -> None:
    import torch

    torch.manual_seed(0)


def clip_tokenizer() -> Any:
    """Byte-level BPE over the 256 byte symbols, no merges; start/end tokens last (ids 512/513),
    so that no real token gets id 0 (OWLv2 treats a query starting with id 0 as padding)."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    chars = sorted(ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab) + 1  # id 0 stays unused
    for c in chars:
        vocab[c + "</w>"] = len(vocab) + 1
    vocab["<|startoftext|>"] = len(vocab) + 1
    vocab["<|endoftext|>"] = len(vocab) + 1
    return CLIPTokenizer(vocab=vocab, merges=[])


def _clip_text_config(tok: Any, max_positions: int = 77) -> dict[str, Any]:
    return {
        "vocab_size": max(tok.get_vocab().values()) + 1,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": max_positions,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }


def _vit_config(side: int, patch: int = 8) -> dict[str, Any]:
    return {
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": side,
        "patch_size": patch,
    }


def build_clip(folder: Path) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    _seed()
    tok = clip_tokenizer()
    config = CLIPConfig(
        text_config=_clip_text_config(tok),
        vision_config=_vit_config(CLIP_SIDE),
        projection_dim=8,
    )
    images = CLIPImageProcessor(
        size={"shortest_edge": CLIP_SIDE}, crop_size={"height": CLIP_SIDE, "width": CLIP_SIDE}
    )
    return _save(folder, CLIPModel(config), CLIPProcessor(image_processor=images, tokenizer=tok))


def _sentencepiece_model() -> bytes:
    """A character-level SentencePiece model trained on a few sentences in memory."""
    import sentencepiece as spm

    text = [
        "a photo of a cat. a close-up photo of a dog. a photo of the bird.",
        "a low resolution photo of a red fox, a tabby cat, sea shells, a mug of coffee.",
        "abcdefghijklmnopqrstuvwxyz 0123456789 ,.-'",
    ]
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text),
        model_writer=out,
        model_type="char",
        vocab_size=48,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        character_coverage=1.0,
        minloglevel=2,
    )
    return out.getvalue()


def build_siglip(folder: Path) -> Path:
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor
    from transformers.models.siglip.tokenization_siglip import SiglipTokenizer

    _seed()
    folder.mkdir(parents=True, exist_ok=True)
    spm_file = folder / "spiece.model"
    spm_file.write_bytes(_sentencepiece_model())
    tok = SiglipTokenizer(vocab_file=str(spm_file), model_max_length=16)
    text = {
        "vocab_size": len(tok),
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": 16,
        "bos_token_id": None,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    config = SiglipConfig(text_config=text, vision_config=_vit_config(CLIP_SIDE))
    images = SiglipImageProcessor(size={"height": CLIP_SIDE, "width": CLIP_SIDE})
    processor = SiglipProcessor(image_processor=images, tokenizer=tok)
    return _save(folder, SiglipModel(config), processor)


def build_owlv2(folder: Path) -> Path:
    from transformers import (
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessor,
        Owlv2Processor,
    )

    _seed()
    tok = clip_tokenizer()
    config = Owlv2Config(
        text_config=_clip_text_config(tok, max_positions=16),
        vision_config=_vit_config(OWL_SIDE),
        projection_dim=16,
    )
    images = Owlv2ImageProcessor(size={"height": OWL_SIDE, "width": OWL_SIDE})
    processor = Owlv2Processor(image_processor=images, tokenizer=tok)
    return _save(folder, Owlv2ForObjectDetection(config), processor)


def _bert_tokenizer() -> Any:
    """Character-level WordPiece with BERT's special-token ids, padded with unused tokens."""
    from transformers import BertTokenizer

    vocab = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103, ".": 1012}
    vocab["?"] = 1029
    taken = set(vocab.values())
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789,-'")
    pieces = chars + ["##" + c for c in chars]
    free = (i for i in range(1, 2000) if i not in taken)
    for piece in pieces:
        vocab[piece] = next(free)
    top = max(vocab.values())
    for i in range(1, top):
        if i not in vocab.values():
            vocab[f"[unused{i}]"] = i
    return BertTokenizer(vocab=vocab)


def build_grounding_dino(folder: Path) -> Path:
    from transformers import (
        BertConfig,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    _seed()
    tok = _bert_tokenizer()
    backbone = SwinConfig(
        image_size=DINO_SIDE,
        patch_size=4,
        embed_dim=8,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        window_size=2,
        out_features=["stage1", "stage2", "stage3"],
    )
    text = BertConfig(
        vocab_size=max(tok.get_vocab().values()) + 1,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    config = GroundingDinoConfig(
        backbone_config=backbone,
        text_config=text,
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        num_queries=20,
        max_text_len=64,
        encoder_n_points=2,
        decoder_n_points=2,
    )
    images = GroundingDinoImageProcessor(size={"shortest_edge": DINO_SIDE, "longest_edge": 96})
    processor = GroundingDinoProcessor(image_processor=images, tokenizer=tok)
    return _save(folder, GroundingDinoForObjectDetection(config), processor)


def build_sam(folder: Path) -> Path:
    from transformers import (
        SamConfig,
        SamImageProcessor,
        SamMaskDecoderConfig,
        SamModel,
        SamProcessor,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )

    _seed()
    vision = SamVisionConfig(
        hidden_size=16,
        output_channels=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=SAM_SIDE,
        patch_size=8,
        window_size=4,
        global_attn_indexes=[1],
        num_pos_feats=8,
        mlp_dim=32,
    )
    prompt = SamPromptEncoderConfig(hidden_size=16, image_size=SAM_SIDE, patch_size=8)
    decoder = SamMaskDecoderConfig(
        hidden_size=16, mlp_dim=32, num_attention_heads=2, iou_head_hidden_dim=16
    )
    config = SamConfig(
        vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder
    )
    images = SamImageProcessor(
        size={"longest_edge": SAM_SIDE},
        pad_size={"height": SAM_SIDE, "width": SAM_SIDE},
        mask_size={"longest_edge": SAM_SIDE // 4},
        mask_pad_size={"height": SAM_SIDE // 4, "width": SAM_SIDE // 4},
    )
    return _save(folder, SamModel(config), SamProcessor(image_processor=images))


BUILDERS = {
    "clip": build_clip,
    "siglip": build_siglip,
    "owlv2": build_owlv2,
    "grounding-dino": build_grounding_dino,
    "sam": build_sam,
}
