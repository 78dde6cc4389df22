"""Prompt tokenizer: SentencePiece with PaliGemma's special ids and pi0's prompt format.

    tokens = [bos] + encode(clean(text)) + encode("\\n"),  right-padded with pad (0) to max_len, mask = valid
    clean(text) = text.strip() with "_" and "\\n" replaced by spaces

Special ids (PaliGemma): pad 0, eos 1, bos 2, unk 3. With a user's real `paligemma_tokenizer.model`
(vocab 257152) the ids match released checkpoints. Without it, pi0lab ships a small SentencePiece
model trained on the instruction corpus in `pi0lab/assets/instructions.txt` (512 pieces, whole words,
byte fallback so any text encodes); its ids fit `Pi0Config.nano()`'s vocabulary, not a real pi0.
"""

import io
import logging
from pathlib import Path

import sentencepiece
import torch
from torch import Tensor

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SHIPPED_MODEL = ASSETS / "instructions_tokenizer.model"
SHIPPED_CORPUS = ASSETS / "instructions.txt"
PAD, EOS, BOS, UNK = 0, 1, 2, 3

log = logging.getLogger(__name__)


def train_tokenizer(corpus: str | Path, output: str | Path, vocab_size: int = 512) -> Path:
    """Train a BPE SentencePiece model with PaliGemma's special ids on a text file (one prompt per line).

    BPE merges every frequent word of a small corpus into one piece (a unigram model trained on a
    corpus this small keeps splitting common words into letters, so prompts get needlessly long).
    `vocab_size` counts the 256 byte-fallback pieces. This is how the shipped
    `instructions_tokenizer.model` was made (from `instructions.txt`).
    """
    proto = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus), model_writer=proto, vocab_size=vocab_size, hard_vocab_limit=False, model_type="bpe",
        pad_id=PAD, eos_id=EOS, bos_id=BOS, unk_id=UNK, byte_fallback=True, user_defined_symbols=["\n"],
        character_coverage=1.0, add_dummy_prefix=False, normalization_rule_name="identity", minloglevel=2,
    )
    Path(output).write_bytes(proto.getvalue())
    return Path(output)


class PaligemmaTokenizer:
    """Tokenize prompts for pi0: `tokenize(list of N strings) -> (tokens [N,L] long, mask [N,L] bool)`."""

    def __init__(self, path: str | Path | None = None, max_len: int = 48):
        self.path = Path(path) if path is not None else SHIPPED_MODEL
        if not self.path.exists():
            raise FileNotFoundError(f"SentencePiece model {self.path} not found (give the path of "
                                    "paligemma_tokenizer.model, or None for the tokenizer shipped with pi0lab)")
        self.max_len = max_len
        self.sp = sentencepiece.SentencePieceProcessor(model_file=str(self.path))
        specials = (self.sp.pad_id(), self.sp.eos_id(), self.sp.bos_id(), self.sp.unk_id())
        if specials != (PAD, EOS, BOS, UNK):
            raise ValueError(f"{self.path} has special ids pad/eos/bos/unk = {specials}; pi0 needs (0, 1, 2, 3)")

    @property
    def is_shipped(self) -> bool:
        return self.path == SHIPPED_MODEL

    @property
    def vocab_size(self) -> int:
        return self.sp.vocab_size()

    def encode(self, prompt: str) -> list[int]:
        """One prompt -> [bos] + pieces of the cleaned text + pieces of "\\n" (unpadded, untruncated)."""
        cleaned = prompt.strip().replace("_", " ").replace("\n", " ")
        return self.sp.encode(cleaned, add_bos=True) + self.sp.encode("\n")

    def tokenize(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """N prompts -> tokens [N,L] (pad 0) and mask [N,L]; longer prompts are truncated to L with a warning."""
        if isinstance(prompts, str):
            raise TypeError("tokenize takes a list of prompts, not one string")
        tokens = torch.full((len(prompts), self.max_len), PAD, dtype=torch.long)
        mask = torch.zeros((len(prompts), self.max_len), dtype=torch.bool)
        for row, prompt in enumerate(prompts):
            ids = self.encode(prompt)
            if len(ids) > self.max_len:
                log.warning("prompt of %d tokens truncated to max_len=%d: %r", len(ids), self.max_len, prompt)
                ids = ids[: self.max_len]
            tokens[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = True
        return tokens, mask

    def decode(self, tokens: Tensor, mask: Tensor) -> str:
        """Valid ids of one row [L] -> text (for inspection)."""
        return self.sp.decode(tokens[mask.bool()].tolist())
