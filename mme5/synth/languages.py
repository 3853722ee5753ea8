"""The 93 XLM-R languages, their writing systems, and the sampling weights of the synthesis.

XLM-R was trained on 100 CC-100 "languages"; five are romanised variants (bn, hi, ta, te, ur), one
is a second Burmese encoding and Chinese appears twice (simplified / traditional). Merged to ISO
639-1 codes that leaves the 93 languages mmE5 draws from.

``CC100_GIB`` holds the approximate size of each language's CC-100 data (GiB, XLM-R paper, Table 6,
rounded). The default weight is ``size ** alpha`` (XLM-R's own exponential smoothing with alpha 0.3):
high-resource languages are drawn more often while every language keeps a share.
"""

from __future__ import annotations

from collections.abc import Mapping

from mme5.errors import ConfigError

#: ISO 639-1 code -> (English name, approximate CC-100 GiB, script(s) its texts are written in).
LANGUAGES: dict[str, tuple[str, float, tuple[str, ...]]] = {
    "af": ("Afrikaans", 1.3, ("LATIN",)),
    "am": ("Amharic", 0.7, ("ETHIOPIC",)),
    "ar": ("Arabic", 28.0, ("ARABIC",)),
    "as": ("Assamese", 0.1, ("BENGALI",)),
    "az": ("Azerbaijani", 6.5, ("LATIN",)),
    "be": ("Belarusian", 3.5, ("CYRILLIC",)),
    "bg": ("Bulgarian", 57.5, ("CYRILLIC",)),
    "bn": ("Bengali", 8.4, ("BENGALI",)),
    "br": ("Breton", 0.1, ("LATIN",)),
    "bs": ("Bosnian", 0.1, ("LATIN",)),
    "ca": ("Catalan", 10.1, ("LATIN",)),
    "cs": ("Czech", 16.3, ("LATIN",)),
    "cy": ("Welsh", 0.8, ("LATIN",)),
    "da": ("Danish", 45.6, ("LATIN",)),
    "de": ("German", 66.6, ("LATIN",)),
    "el": ("Greek", 46.9, ("GREEK",)),
    "en": ("English", 300.8, ("LATIN",)),
    "eo": ("Esperanto", 0.9, ("LATIN",)),
    "es": ("Spanish", 53.3, ("LATIN",)),
    "et": ("Estonian", 6.1, ("LATIN",)),
    "eu": ("Basque", 2.0, ("LATIN",)),
    "fa": ("Persian", 111.6, ("ARABIC",)),
    "fi": ("Finnish", 54.3, ("LATIN",)),
    "fr": ("French", 56.8, ("LATIN",)),
    "fy": ("Western Frisian", 0.2, ("LATIN",)),
    "ga": ("Irish", 0.5, ("LATIN",)),
    "gd": ("Scottish Gaelic", 0.1, ("LATIN",)),
    "gl": ("Galician", 2.9, ("LATIN",)),
    "gu": ("Gujarati", 1.9, ("GUJARATI",)),
    "ha": ("Hausa", 0.3, ("LATIN",)),
    "he": ("Hebrew", 31.6, ("HEBREW",)),
    "hi": ("Hindi", 20.2, ("DEVANAGARI",)),
    "hr": ("Croatian", 20.5, ("LATIN",)),
    "hu": ("Hungarian", 58.4, ("LATIN",)),
    "hy": ("Armenian", 5.5, ("ARMENIAN",)),
    "id": ("Indonesian", 148.3, ("LATIN",)),
    "is": ("Icelandic", 3.2, ("LATIN",)),
    "it": ("Italian", 30.2, ("LATIN",)),
    "ja": ("Japanese", 69.3, ("CJK", "HIRAGANA", "KATAKANA")),
    "jv": ("Javanese", 0.2, ("LATIN",)),
    "ka": ("Georgian", 9.1, ("GEORGIAN",)),
    "kk": ("Kazakh", 6.4, ("CYRILLIC",)),
    "km": ("Khmer", 1.5, ("KHMER",)),
    "kn": ("Kannada", 3.3, ("KANNADA",)),
    "ko": ("Korean", 54.2, ("HANGUL",)),
    "ku": ("Kurdish (Kurmanji)", 0.4, ("LATIN",)),
    "ky": ("Kyrgyz", 0.5, ("CYRILLIC",)),
    "la": ("Latin", 2.5, ("LATIN",)),
    "lo": ("Lao", 0.6, ("LAO",)),
    "lt": ("Lithuanian", 13.7, ("LATIN",)),
    "lv": ("Latvian", 8.8, ("LATIN",)),
    "mg": ("Malagasy", 0.2, ("LATIN",)),
    "mk": ("Macedonian", 4.8, ("CYRILLIC",)),
    "ml": ("Malayalam", 7.6, ("MALAYALAM",)),
    "mn": ("Mongolian", 3.0, ("CYRILLIC",)),
    "mr": ("Marathi", 2.8, ("DEVANAGARI",)),
    "ms": ("Malay", 8.5, ("LATIN",)),
    "my": ("Burmese", 0.9, ("MYANMAR",)),
    "ne": ("Nepali", 3.8, ("DEVANAGARI",)),
    "nl": ("Dutch", 29.3, ("LATIN",)),
    "no": ("Norwegian", 49.1, ("LATIN",)),
    "om": ("Oromo", 0.1, ("LATIN",)),
    "or": ("Odia", 0.6, ("ORIYA",)),
    "pa": ("Punjabi", 0.8, ("GURMUKHI",)),
    "pl": ("Polish", 44.6, ("LATIN",)),
    "ps": ("Pashto", 0.7, ("ARABIC",)),
    "pt": ("Portuguese", 49.1, ("LATIN",)),
    "ro": ("Romanian", 61.4, ("LATIN",)),
    "ru": ("Russian", 278.0, ("CYRILLIC",)),
    "sa": ("Sanskrit", 0.3, ("DEVANAGARI",)),
    "sd": ("Sindhi", 0.4, ("ARABIC",)),
    "si": ("Sinhala", 3.6, ("SINHALA",)),
    "sk": ("Slovak", 23.2, ("LATIN",)),
    "sl": ("Slovenian", 6.9, ("LATIN",)),
    "so": ("Somali", 0.4, ("LATIN",)),
    "sq": ("Albanian", 5.4, ("LATIN",)),
    "sr": ("Serbian", 9.1, ("CYRILLIC", "LATIN")),
    "su": ("Sundanese", 0.1, ("LATIN",)),
    "sv": ("Swedish", 77.8, ("LATIN",)),
    "sw": ("Swahili", 1.6, ("LATIN",)),
    "ta": ("Tamil", 12.2, ("TAMIL",)),
    "te": ("Telugu", 4.7, ("TELUGU",)),
    "th": ("Thai", 71.7, ("THAI",)),
    "tl": ("Tagalog", 3.1, ("LATIN",)),
    "tr": ("Turkish", 20.9, ("LATIN",)),
    "ug": ("Uyghur", 0.4, ("ARABIC",)),
    "uk": ("Ukrainian", 84.6, ("CYRILLIC",)),
    "ur": ("Urdu", 5.7, ("ARABIC",)),
    "uz": ("Uzbek", 0.7, ("LATIN", "CYRILLIC")),
    "vi": ("Vietnamese", 137.3, ("LATIN",)),
    "xh": ("Xhosa", 0.1, ("LATIN",)),
    "yi": ("Yiddish", 0.3, ("HEBREW",)),
    "zh": ("Chinese", 63.5, ("CJK",)),
}

XLMR_LANGUAGES: tuple[str, ...] = tuple(LANGUAGES)


def language_name(code: str) -> str:
    """English name of an XLM-R language code (raises ``KeyError`` with the valid codes listed)."""
    check_languages([code])
    return LANGUAGES[code][0]


def scripts_of(code: str) -> tuple[str, ...]:
    """Unicode script names (first word of ``unicodedata.name``) the language is written in."""
    check_languages([code])
    return LANGUAGES[code][2]


def check_languages(codes: object) -> None:
    """Raise one clear ``ValueError`` for codes outside the 93 XLM-R languages."""
    unknown = [c for c in codes if c not in LANGUAGES]  # type: ignore[union-attr]
    if unknown:
        raise ConfigError(
            f"unknown language code(s) {unknown}; expected ISO 639-1 codes of the 93 XLM-R "
            f"languages: {', '.join(XLMR_LANGUAGES)}"
        )


def language_weights(
    alpha: float = 0.3, overrides: Mapping[str, float] | None = None, only: list[str] | None = None
) -> dict[str, float]:
    """Normalised sampling weights: ``CC-100 size ** alpha``, then ``overrides`` (unnormalised, per code).

    ``alpha`` 0 draws every language equally, 1 in proportion to its data; ``only`` restricts the draw
    to the listed codes; an override of 0 removes a language.
    """
    if alpha < 0:
        raise ConfigError(f"language alpha must be >= 0, got {alpha}")
    codes = list(only) if only else list(XLMR_LANGUAGES)
    check_languages(codes)
    weights = {c: LANGUAGES[c][1] ** alpha for c in codes}
    if overrides:
        check_languages(list(overrides))
        for code, w in overrides.items():
            if w < 0:
                raise ConfigError(f"language weight for '{code}' must be >= 0, got {w}")
            weights[code] = float(w)
    weights = {c: w for c, w in weights.items() if w > 0}
    total = sum(weights.values())
    if total <= 0:
        raise ConfigError("language weights are all zero; keep at least one language")
    return {c: w / total for c, w in sorted(weights.items())}
