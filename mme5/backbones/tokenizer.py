"""An offline byte-level BPE tokenizer for the tiny twins.

Real checkpoints ship their tokenizer; the tiny random-initialised twins need one that is built
here, without a network, in about a second. It is trained with ``tokenizers`` on a small built-in
multilingual text covering the scripts of the demo languages (Latin with Italian, Spanish, Polish and
Turkish letters, Cyrillic, CJK and Hangul). Byte-level BPE starts from all 256 bytes, so any text
encodes, and each family's special, chat and image tokens are added as single tokens.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

#: A few sentences per demo language (en, it, es, ru, zh, pl, tr, ko) plus digits and punctuation.
MULTILINGUAL_TEXT = """\
A photo of a cat sitting on a wooden table next to a cup of coffee.
Find me an everyday image that matches the given caption: two dogs play in the snow.
Represent the given image with the following question: what colour is the bus?
The astronaut floats above the Earth; the rocket stands on the launch pad at night.
Una foto di un gatto seduto su un tavolo di legno accanto a una tazza di caffè.
Il cane corre nel parco, perché è felice. Città, università, così, più, già.
Una foto de un gato sentado en una mesa de madera junto a una taza de café.
El niño come una manzana en la cocina. ¿Dónde está la estación? ¡Mañana será otro día!
Фотография кошки, сидящей на деревянном столе рядом с чашкой кофе.
Собака бежит по парку. Москва, улица, здание, солнце, ёлка, объявление.
一只猫坐在木桌上，旁边有一杯咖啡。两只狗在雪地里玩耍。
这是一张城市街道的照片，天空很蓝，人们在走路。图像，文本，检索，问题，答案。
Zdjęcie kota siedzącego na drewnianym stole obok filiżanki kawy.
Pies biegnie przez park. Żółć, źdźbło, łąka, gęś, ścieżka, miłość, dzień.
Ahşap bir masada bir fincan kahvenin yanında oturan bir kedinin fotoğrafı.
Köpek parkta koşuyor. Çiçek, ışık, güneş, öğrenci, şehir, İstanbul, ağaç.
나무 탁자 위에 커피 한 잔 옆에 앉아 있는 고양이 사진입니다.
개가 공원에서 뛰고 있습니다. 하늘, 도시, 사람, 이미지, 질문, 대답.
0 1 2 3 4 5 6 7 8 9 10 100 2024 3.14 (a) [b] {c} "quote" 'single' - _ / \\ : ; , . ! ? @ # % & * + = < > | ~ ^ $
"""


def training_text() -> str:
    """The built-in multilingual text plus every phrase the demo corpus can produce (short demo prompts)."""
    from mme5.demo import vocabulary_texts  # lazy: the demo package is only a source of text here

    return MULTILINGUAL_TEXT + "\n" + "\n".join(vocabulary_texts())


def train_bpe(special_tokens: list[str], vocab_size: int = 2048, text: str | None = None) -> Tokenizer:
    """Train a byte-level BPE ``tokenizers.Tokenizer`` whose first ids are ``special_tokens``."""
    text = training_text() if text is None else text
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Repeat the text so that merges of the rarer scripts still reach the minimum frequency.
    tok.train_from_iterator([line for line in text.splitlines() if line] * 4, trainer=trainer)
    return tok


def build_tokenizer(
    special_tokens: list[str],
    *,
    bos_token: str | None = None,
    eos_token: str | None = None,
    pad_token: str | None = None,
    unk_token: str | None = None,
    extra_attributes: dict[str, str] | None = None,
    chat_template: str | None = None,
    padding_side: str = "right",
    vocab_size: int = 2048,
) -> PreTrainedTokenizerFast:
    """A Hugging Face fast tokenizer around :func:`train_bpe`, ready for ``save_pretrained``.

    ``extra_attributes`` become named special tokens (e.g. ``{"image_token": "<|image|>"}``), which
    processors read from the tokenizer.
    """
    tok = train_bpe(special_tokens, vocab_size=vocab_size)
    kwargs: dict[str, object] = {
        "tokenizer_object": tok,
        "padding_side": padding_side,
        "model_max_length": 4096,
        "clean_up_tokenization_spaces": False,
    }
    for name, value in (("bos_token", bos_token), ("eos_token", eos_token), ("pad_token", pad_token),
                        ("unk_token", unk_token)):
        if value is not None:
            kwargs[name] = value
    if extra_attributes:
        kwargs["extra_special_tokens"] = dict(extra_attributes)
    hf = PreTrainedTokenizerFast(**kwargs)
    if chat_template is not None:
        hf.chat_template = chat_template
    return hf
