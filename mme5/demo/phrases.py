"""Phrase tables of the demo corpus: English and the seven XTD languages (it, es, ru, zh, pl, tr, ko).

Each language has the names of every scene attribute (shape nouns with their grammatical gender,
colour and size adjectives in each gender, locations, backgrounds, count words) and the templates of
captions, questions, edit requests and referring expressions. Adjectives and articles agree with the
shape noun's gender; Korean particles that depend on the preceding syllable are written as
``(이/가)``-style markers and resolved after formatting. Instructions stay in English (as in mmE5);
only the texts the model matches are in the drawn language.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from mme5.demo.scene import BACKGROUNDS, CELLS, COLOURS, SHAPES, SIZES, DemoObject, Scene

LANGUAGES: tuple[str, ...] = ("en", "it", "es", "ru", "zh", "pl", "tr", "ko")

#: Template keys every language defines (``str.format`` fields in braces).
TEMPLATE_KEYS: tuple[str, ...] = (
    "object",  # one object in a caption: {art} {size} {colour} {shape} {loc}
    "caption",  # {objects} {background}
    "and",  # the word joining the last two objects
    "q_colour",  # What colour is the {shape}?
    "q_shape",  # What shape is {loc}?
    "q_position",  # Where is the {colour} {shape}?
    "q_count",  # How many shapes are there?
    "q_object",  # What is {loc}?
    "answer_object",  # {art} {size} {colour} {shape} (the answer to q_object)
    "edit_colour",  # the {shape} is now {colour}
    "edit_background",  # the background is now {bg}
    "ref_object",  # the {colour} {shape}
    "ref_position",  # the shape {loc}
)


@dataclass(frozen=True)
class PhraseTable:
    """All words and templates of one language.

    ``genders[shape]`` selects the form of every gendered word (``colours[c][g]``, ``sizes[s][g]``,
    ``articles[g]``, ``definite[g]``); languages without gender use the single key ``"-"``.
    """

    lang: str
    shapes: dict[str, str]
    genders: dict[str, str]
    colours: dict[str, dict[str, str]]
    sizes: dict[str, dict[str, str]]
    articles: dict[str, str]
    definite: dict[str, str]
    locations: dict[str, str]  # cell -> locative phrase used in captions and questions
    location_answers: dict[str, str]  # cell -> short answer to "where is ...?"
    backgrounds: dict[str, str]  # background -> the caption's background phrase
    background_names: dict[str, str]  # background -> predicative form ("the background is now ...")
    counts: dict[int, str]  # answer to "how many shapes?"
    templates: dict[str, str]

    # ---- words ------------------------------------------------------------------------------------
    def _fields(self, obj: DemoObject) -> dict[str, str]:
        g = self.genders[obj.shape]
        return {
            "shape": self.shapes[obj.shape],
            "colour": self.colours[obj.colour][g],
            "size": self.sizes[obj.size][g],
            "art": self.articles[g],
            "def": self.definite[g],
            "loc": self.locations[obj.cell],
        }

    def _fill(self, key: str, **fields: str) -> str:
        return finish(self.lang, self.templates[key].format(**fields))

    def shape_name(self, shape: str) -> str:
        """The bare noun (a classification label / VQA answer)."""
        return self.shapes[shape]

    def colour_name(self, colour: str, shape: str | None = None) -> str:
        """The colour adjective, agreeing with ``shape`` when given (else the citation form)."""
        g = self.genders[shape] if shape is not None else _citation_gender(self)
        return self.colours[colour][g]

    def location_answer(self, cell: str) -> str:
        return self.location_answers[cell]

    def count_answer(self, n: int) -> str:
        return self.counts[n]

    # ---- sentences --------------------------------------------------------------------------------
    def describe_object(self, obj: DemoObject) -> str:
        """One object with all its attributes (size, colour, shape, location)."""
        return self._fill("object", **self._fields(obj))

    def caption(self, scene: Scene) -> str:
        """A caption naming every object (in cell order) and the background: unique per scene."""
        parts = [
            finish(self.lang, self.templates["object"].format(**self._fields(o))) for o in scene.ordered()
        ]
        if len(parts) == 1:
            objects = parts[0]
        else:
            sep = "，" if self.lang == "zh" else ", "
            objects = sep.join(parts[:-1]) + self.templates["and"] + parts[-1]
        return self._fill("caption", objects=objects, background=self.backgrounds[scene.background])

    def question_colour(self, obj: DemoObject) -> str:
        return capitalise(self._fill("q_colour", **self._fields(obj)))

    def question_shape(self, cell: str) -> str:
        return capitalise(self._fill("q_shape", loc=self.locations[cell]))

    def question_position(self, obj: DemoObject) -> str:
        return capitalise(self._fill("q_position", **self._fields(obj)))

    def question_count(self) -> str:
        return capitalise(self._fill("q_count"))

    def question_object(self, cell: str) -> str:
        return capitalise(self._fill("q_object", loc=self.locations[cell]))

    def answer_object(self, obj: DemoObject) -> str:
        """An object named by size, colour and shape, without its location ("a small red star")."""
        return self._fill("answer_object", **self._fields(obj))

    def edit_colour(self, obj: DemoObject, new_colour: str) -> str:
        fields = self._fields(obj)
        fields["colour"] = self.colours[new_colour][self.genders[obj.shape]]
        return self._fill("edit_colour", **fields)

    def edit_background(self, background: str) -> str:
        return self._fill("edit_background", bg=self.background_names[background])

    def refer_object(self, obj: DemoObject) -> str:
        """A referring expression by colour and shape ("the red star")."""
        return self._fill("ref_object", **self._fields(obj))

    def refer_position(self, cell: str) -> str:
        """A referring expression by location ("the shape at the top left")."""
        return self._fill("ref_position", loc=self.locations[cell])


def _citation_gender(table: PhraseTable) -> str:
    return "m" if "m" in table.articles else "-"


def capitalise(text: str) -> str:
    """Upper-case the first letter (after any leading punctuation such as Spanish '¿')."""
    for i, ch in enumerate(text):
        if ch.isalpha():
            return text[:i] + ch.upper() + text[i + 1 :]
    return text


_KO_MARKER = re.compile(r"(.)\((이/가|과/와|은/는|을/를|으로/로)\)")


def _ko_has_final(ch: str) -> tuple[bool, bool]:
    """(has a final consonant, that consonant is ㄹ) for a Hangul syllable."""
    code = ord(ch) - 0xAC00
    if not 0 <= code < 11172:
        return False, False
    final = code % 28
    return final != 0, final == 8


def _ko_particle(match: re.Match) -> str:
    prev, pair = match.group(1), match.group(2)
    with_final, without_final = pair.split("/")
    has_final, is_rieul = _ko_has_final(prev)
    if pair == "으로/로":
        return prev + (with_final if has_final and not is_rieul else without_final)
    return prev + (with_final if has_final else without_final)


def finish(lang: str, text: str) -> str:
    """Language-specific surface fixes after formatting (English a/an, Korean particles, spacing)."""
    if lang == "en":
        text = re.sub(r"\b([Aa]) (?=[aeiou])", r"\1n ", text)
    elif lang == "ko":
        text = _KO_MARKER.sub(_ko_particle, text)
    return re.sub(r" {2,}", " ", text).strip()


def _same(forms: dict[str, str], genders: Sequence[str]) -> dict[str, dict[str, str]]:
    """A gender-invariant adjective table."""
    return {k: dict.fromkeys(genders, v) for k, v in forms.items()}


_EN = PhraseTable(
    lang="en",
    shapes={"circle": "circle", "square": "square", "triangle": "triangle", "star": "star", "heart": "heart"},
    genders=dict.fromkeys(SHAPES, "-"),
    colours=_same(
        {
            "red": "red",
            "green": "green",
            "blue": "blue",
            "yellow": "yellow",
            "purple": "purple",
            "orange": "orange",
        },
        "-",
    ),
    sizes=_same({"small": "small", "large": "large"}, "-"),
    articles={"-": "a"},
    definite={"-": "the"},
    locations={
        "top_left": "at the top left",
        "top_right": "at the top right",
        "bottom_left": "at the bottom left",
        "bottom_right": "at the bottom right",
    },
    location_answers={
        "top_left": "top left",
        "top_right": "top right",
        "bottom_left": "bottom left",
        "bottom_right": "bottom right",
    },
    backgrounds={
        "black": "on a black background",
        "white": "on a white background",
        "gray": "on a gray background",
    },
    background_names={"black": "black", "white": "white", "gray": "gray"},
    counts={1: "one", 2: "two", 3: "three", 4: "four"},
    templates={
        "object": "{art} {size} {colour} {shape} {loc}",
        "caption": "{objects} {background}",
        "and": " and ",
        "q_colour": "what colour is the {shape}?",
        "q_shape": "what shape is {loc}?",
        "q_position": "where is the {colour} {shape}?",
        "q_count": "how many shapes are in the image?",
        "q_object": "what is {loc}?",
        "answer_object": "{art} {size} {colour} {shape}",
        "edit_colour": "the {shape} is now {colour}",
        "edit_background": "the background is now {bg}",
        "ref_object": "the {colour} {shape}",
        "ref_position": "the shape {loc}",
    },
)

_IT = PhraseTable(
    lang="it",
    shapes={
        "circle": "cerchio",
        "square": "quadrato",
        "triangle": "triangolo",
        "star": "stella",
        "heart": "cuore",
    },
    genders={"circle": "m", "square": "m", "triangle": "m", "star": "f", "heart": "m"},
    colours={
        "red": {"m": "rosso", "f": "rossa"},
        "green": {"m": "verde", "f": "verde"},
        "blue": {"m": "blu", "f": "blu"},
        "yellow": {"m": "giallo", "f": "gialla"},
        "purple": {"m": "viola", "f": "viola"},
        "orange": {"m": "arancione", "f": "arancione"},
    },
    sizes={"small": {"m": "piccolo", "f": "piccola"}, "large": {"m": "grande", "f": "grande"}},
    articles={"m": "un", "f": "una"},
    definite={"m": "il", "f": "la"},
    locations={
        "top_left": "in alto a sinistra",
        "top_right": "in alto a destra",
        "bottom_left": "in basso a sinistra",
        "bottom_right": "in basso a destra",
    },
    location_answers={
        "top_left": "in alto a sinistra",
        "top_right": "in alto a destra",
        "bottom_left": "in basso a sinistra",
        "bottom_right": "in basso a destra",
    },
    backgrounds={"black": "su sfondo nero", "white": "su sfondo bianco", "gray": "su sfondo grigio"},
    background_names={"black": "nero", "white": "bianco", "gray": "grigio"},
    counts={1: "una", 2: "due", 3: "tre", 4: "quattro"},
    templates={
        "object": "{art} {size} {shape} {colour} {loc}",
        "caption": "{objects} {background}",
        "and": " e ",
        "q_colour": "di che colore è {def} {shape}?",
        "q_shape": "quale figura si trova {loc}?",
        "q_position": "dove si trova {def} {shape} {colour}?",
        "q_count": "quante figure ci sono nell'immagine?",
        "q_object": "che cosa c'è {loc}?",
        "answer_object": "{art} {size} {shape} {colour}",
        "edit_colour": "{def} {shape} ora è {colour}",
        "edit_background": "lo sfondo ora è {bg}",
        "ref_object": "{def} {shape} {colour}",
        "ref_position": "la figura {loc}",
    },
)

_ES = PhraseTable(
    lang="es",
    shapes={
        "circle": "círculo",
        "square": "cuadrado",
        "triangle": "triángulo",
        "star": "estrella",
        "heart": "corazón",
    },
    genders={"circle": "m", "square": "m", "triangle": "m", "star": "f", "heart": "m"},
    colours={
        "red": {"m": "rojo", "f": "roja"},
        "green": {"m": "verde", "f": "verde"},
        "blue": {"m": "azul", "f": "azul"},
        "yellow": {"m": "amarillo", "f": "amarilla"},
        "purple": {"m": "morado", "f": "morada"},
        "orange": {"m": "naranja", "f": "naranja"},
    },
    sizes={"small": {"m": "pequeño", "f": "pequeña"}, "large": {"m": "grande", "f": "grande"}},
    articles={"m": "un", "f": "una"},
    definite={"m": "el", "f": "la"},
    locations={
        "top_left": "arriba a la izquierda",
        "top_right": "arriba a la derecha",
        "bottom_left": "abajo a la izquierda",
        "bottom_right": "abajo a la derecha",
    },
    location_answers={
        "top_left": "arriba a la izquierda",
        "top_right": "arriba a la derecha",
        "bottom_left": "abajo a la izquierda",
        "bottom_right": "abajo a la derecha",
    },
    backgrounds={"black": "sobre fondo negro", "white": "sobre fondo blanco", "gray": "sobre fondo gris"},
    background_names={"black": "negro", "white": "blanco", "gray": "gris"},
    counts={1: "una", 2: "dos", 3: "tres", 4: "cuatro"},
    templates={
        "object": "{art} {shape} {colour} {size} {loc}",
        "caption": "{objects} {background}",
        "and": " y ",
        "q_colour": "¿de qué color es {def} {shape}?",
        "q_shape": "¿qué figura hay {loc}?",
        "q_position": "¿dónde está {def} {shape} {colour}?",
        "q_count": "¿cuántas figuras hay en la imagen?",
        "q_object": "¿qué hay {loc}?",
        "answer_object": "{art} {shape} {colour} {size}",
        "edit_colour": "{def} {shape} ahora es {colour}",
        "edit_background": "el fondo ahora es {bg}",
        "ref_object": "{def} {shape} {colour}",
        "ref_position": "la figura {loc}",
    },
)

_RU = PhraseTable(
    lang="ru",
    shapes={
        "circle": "круг",
        "square": "квадрат",
        "triangle": "треугольник",
        "star": "звезда",
        "heart": "сердце",
    },
    genders={"circle": "m", "square": "m", "triangle": "m", "star": "f", "heart": "n"},
    colours={
        "red": {"m": "красный", "f": "красная", "n": "красное"},
        "green": {"m": "зелёный", "f": "зелёная", "n": "зелёное"},
        "blue": {"m": "синий", "f": "синяя", "n": "синее"},
        "yellow": {"m": "жёлтый", "f": "жёлтая", "n": "жёлтое"},
        "purple": {"m": "фиолетовый", "f": "фиолетовая", "n": "фиолетовое"},
        "orange": {"m": "оранжевый", "f": "оранжевая", "n": "оранжевое"},
    },
    sizes={
        "small": {"m": "маленький", "f": "маленькая", "n": "маленькое"},
        "large": {"m": "большой", "f": "большая", "n": "большое"},
    },
    articles={"m": "", "f": "", "n": ""},
    definite={"m": "", "f": "", "n": ""},
    locations={
        "top_left": "вверху слева",
        "top_right": "вверху справа",
        "bottom_left": "внизу слева",
        "bottom_right": "внизу справа",
    },
    location_answers={
        "top_left": "вверху слева",
        "top_right": "вверху справа",
        "bottom_left": "внизу слева",
        "bottom_right": "внизу справа",
    },
    backgrounds={"black": "на чёрном фоне", "white": "на белом фоне", "gray": "на сером фоне"},
    background_names={"black": "чёрный", "white": "белый", "gray": "серый"},
    counts={1: "одна", 2: "две", 3: "три", 4: "четыре"},
    templates={
        "object": "{size} {colour} {shape} {loc}",
        "caption": "{objects} {background}",
        "and": " и ",
        "q_colour": "какого цвета {shape}?",
        "q_shape": "какая фигура находится {loc}?",
        "q_position": "где находится {colour} {shape}?",
        "q_count": "сколько фигур на картинке?",
        "q_object": "что находится {loc}?",
        "answer_object": "{size} {colour} {shape}",
        "edit_colour": "{shape} теперь {colour}",
        "edit_background": "фон теперь {bg}",
        "ref_object": "{colour} {shape}",
        "ref_position": "фигура {loc}",
    },
)

_ZH = PhraseTable(
    lang="zh",
    shapes={"circle": "圆形", "square": "正方形", "triangle": "三角形", "star": "星形", "heart": "心形"},
    genders=dict.fromkeys(SHAPES, "-"),
    colours=_same(
        {
            "red": "红色",
            "green": "绿色",
            "blue": "蓝色",
            "yellow": "黄色",
            "purple": "紫色",
            "orange": "橙色",
        },
        "-",
    ),
    sizes=_same({"small": "小", "large": "大"}, "-"),
    articles={"-": "一个"},
    definite={"-": ""},
    locations={
        "top_left": "左上角",
        "top_right": "右上角",
        "bottom_left": "左下角",
        "bottom_right": "右下角",
    },
    location_answers={
        "top_left": "左上角",
        "top_right": "右上角",
        "bottom_left": "左下角",
        "bottom_right": "右下角",
    },
    backgrounds={"black": "黑色背景上", "white": "白色背景上", "gray": "灰色背景上"},
    background_names={"black": "黑色", "white": "白色", "gray": "灰色"},
    counts={1: "一个", 2: "两个", 3: "三个", 4: "四个"},
    templates={
        "object": "{loc}有{art}{size}的{colour}{shape}",
        "caption": "{background}，{objects}。",
        "and": "，",
        "q_colour": "{shape}是什么颜色的？",
        "q_shape": "{loc}是什么形状？",
        "q_position": "{colour}{shape}在哪里？",
        "q_count": "图中有几个图形？",
        "q_object": "{loc}有什么？",
        "answer_object": "{art}{size}的{colour}{shape}",
        "edit_colour": "{shape}变成了{colour}",
        "edit_background": "背景变成了{bg}",
        "ref_object": "{colour}{shape}",
        "ref_position": "{loc}的图形",
    },
)

_PL = PhraseTable(
    lang="pl",
    shapes={
        "circle": "koło",
        "square": "kwadrat",
        "triangle": "trójkąt",
        "star": "gwiazda",
        "heart": "serce",
    },
    genders={"circle": "n", "square": "m", "triangle": "m", "star": "f", "heart": "n"},
    colours={
        "red": {"m": "czerwony", "f": "czerwona", "n": "czerwone"},
        "green": {"m": "zielony", "f": "zielona", "n": "zielone"},
        "blue": {"m": "niebieski", "f": "niebieska", "n": "niebieskie"},
        "yellow": {"m": "żółty", "f": "żółta", "n": "żółte"},
        "purple": {"m": "fioletowy", "f": "fioletowa", "n": "fioletowe"},
        "orange": {"m": "pomarańczowy", "f": "pomarańczowa", "n": "pomarańczowe"},
    },
    sizes={
        "small": {"m": "mały", "f": "mała", "n": "małe"},
        "large": {"m": "duży", "f": "duża", "n": "duże"},
    },
    articles={"m": "", "f": "", "n": ""},
    definite={"m": "", "f": "", "n": ""},
    locations={
        "top_left": "w lewym górnym rogu",
        "top_right": "w prawym górnym rogu",
        "bottom_left": "w lewym dolnym rogu",
        "bottom_right": "w prawym dolnym rogu",
    },
    location_answers={
        "top_left": "w lewym górnym rogu",
        "top_right": "w prawym górnym rogu",
        "bottom_left": "w lewym dolnym rogu",
        "bottom_right": "w prawym dolnym rogu",
    },
    backgrounds={"black": "na czarnym tle", "white": "na białym tle", "gray": "na szarym tle"},
    background_names={"black": "czarne", "white": "białe", "gray": "szare"},
    counts={1: "jedna", 2: "dwie", 3: "trzy", 4: "cztery"},
    templates={
        "object": "{size} {colour} {shape} {loc}",
        "caption": "{objects} {background}",
        "and": " i ",
        "q_colour": "jakiego koloru jest {shape}?",
        "q_shape": "jaka figura jest {loc}?",
        "q_position": "gdzie jest {colour} {shape}?",
        "q_count": "ile figur jest na obrazku?",
        "q_object": "co jest {loc}?",
        "answer_object": "{size} {colour} {shape}",
        "edit_colour": "{shape} jest teraz {colour}",
        "edit_background": "tło jest teraz {bg}",
        "ref_object": "{colour} {shape}",
        "ref_position": "figura {loc}",
    },
)

_TR = PhraseTable(
    lang="tr",
    shapes={"circle": "daire", "square": "kare", "triangle": "üçgen", "star": "yıldız", "heart": "kalp"},
    genders=dict.fromkeys(SHAPES, "-"),
    colours=_same(
        {
            "red": "kırmızı",
            "green": "yeşil",
            "blue": "mavi",
            "yellow": "sarı",
            "purple": "mor",
            "orange": "turuncu",
        },
        "-",
    ),
    sizes=_same({"small": "küçük", "large": "büyük"}, "-"),
    articles={"-": "bir"},
    definite={"-": ""},
    locations={
        "top_left": "sol üstte",
        "top_right": "sağ üstte",
        "bottom_left": "sol altta",
        "bottom_right": "sağ altta",
    },
    location_answers={
        "top_left": "sol üstte",
        "top_right": "sağ üstte",
        "bottom_left": "sol altta",
        "bottom_right": "sağ altta",
    },
    backgrounds={
        "black": "siyah arka plan üzerinde",
        "white": "beyaz arka plan üzerinde",
        "gray": "gri arka plan üzerinde",
    },
    background_names={"black": "siyah", "white": "beyaz", "gray": "gri"},
    counts={1: "bir", 2: "iki", 3: "üç", 4: "dört"},
    templates={
        "object": "{loc} {size} {colour} {art} {shape}",
        "caption": "{background} {objects}",
        "and": " ve ",
        "q_colour": "{shape} ne renk?",
        "q_shape": "{loc} hangi şekil var?",
        "q_position": "{colour} {shape} nerede?",
        "q_count": "resimde kaç şekil var?",
        "q_object": "{loc} ne var?",
        "answer_object": "{size} {colour} {art} {shape}",
        "edit_colour": "{shape} artık {colour}",
        "edit_background": "arka plan artık {bg}",
        "ref_object": "{colour} {shape}",
        "ref_position": "{loc}ki şekil",
    },
)

_KO = PhraseTable(
    lang="ko",
    shapes={"circle": "원", "square": "정사각형", "triangle": "삼각형", "star": "별", "heart": "하트"},
    genders=dict.fromkeys(SHAPES, "-"),
    colours=_same(
        {
            "red": "빨간색",
            "green": "초록색",
            "blue": "파란색",
            "yellow": "노란색",
            "purple": "보라색",
            "orange": "주황색",
        },
        "-",
    ),
    sizes=_same({"small": "작은", "large": "큰"}, "-"),
    articles={"-": ""},
    definite={"-": ""},
    locations={
        "top_left": "왼쪽 위에",
        "top_right": "오른쪽 위에",
        "bottom_left": "왼쪽 아래에",
        "bottom_right": "오른쪽 아래에",
    },
    location_answers={
        "top_left": "왼쪽 위",
        "top_right": "오른쪽 위",
        "bottom_left": "왼쪽 아래",
        "bottom_right": "오른쪽 아래",
    },
    backgrounds={"black": "검은색 배경에", "white": "흰색 배경에", "gray": "회색 배경에"},
    background_names={"black": "검은색", "white": "흰색", "gray": "회색"},
    counts={1: "한 개", 2: "두 개", 3: "세 개", 4: "네 개"},
    templates={
        "object": "{loc} {size} {colour} {shape}",
        "caption": "{background} {objects}(이/가) 있다.",
        "and": "(과/와) ",
        "q_colour": "{shape}의 색깔은 무엇입니까?",
        "q_shape": "{loc}는 어떤 도형이 있습니까?",
        "q_position": "{colour} {shape}의 위치는 어디입니까?",
        "q_count": "그림에 도형이 몇 개 있습니까?",
        "q_object": "{loc} 무엇이 있습니까?",
        "answer_object": "{size} {colour} {shape}",
        "edit_colour": "{shape}의 색이 {colour}(으로/로) 바뀌었다",
        "edit_background": "배경이 {bg}(으로/로) 바뀌었다",
        "ref_object": "{colour} {shape}",
        "ref_position": "{loc} 있는 도형",
    },
)

PHRASES: dict[str, PhraseTable] = {t.lang: t for t in (_EN, _IT, _ES, _RU, _ZH, _PL, _TR, _KO)}


def phrases(lang: str) -> PhraseTable:
    """The phrase table of ``lang``; one clear error for a language the demo does not speak."""
    try:
        return PHRASES[lang]
    except KeyError:
        raise ValueError(
            f"demo corpus has no phrase table for language '{lang}'; expected one of {', '.join(LANGUAGES)}"
        ) from None


def missing_entries(table: PhraseTable) -> list[str]:
    """Names of the entries a table lacks (empty when complete); used by the tests and at import."""
    missing: list[str] = []
    genders = set(table.articles)
    for shape in SHAPES:
        if shape not in table.shapes:
            missing.append(f"shapes.{shape}")
        if table.genders.get(shape) not in genders:
            missing.append(f"genders.{shape}")
    for name, words, keys in (("colours", table.colours, COLOURS), ("sizes", table.sizes, SIZES)):
        for key in keys:
            forms = words.get(key, {})
            missing += [f"{name}.{key}.{g}" for g in sorted(genders) if g not in forms]
    for g in sorted(genders):
        if g not in table.definite:
            missing.append(f"definite.{g}")
    for name, words, keys in (
        ("locations", table.locations, CELLS),
        ("location_answers", table.location_answers, CELLS),
        ("backgrounds", table.backgrounds, BACKGROUNDS),
        ("background_names", table.background_names, BACKGROUNDS),
        ("counts", table.counts, (1, 2, 3, 4)),
    ):
        missing += [f"{name}.{k}" for k in keys if k not in words]
    missing += [f"templates.{k}" for k in TEMPLATE_KEYS if k not in table.templates]
    return missing


def all_phrases(langs: Sequence[str] = LANGUAGES) -> list[str]:
    """Every word and a filled sample of every template, per language (e.g. to train a tiny tokenizer)."""
    from mme5.demo.scene import DemoObject as Obj

    out: list[str] = []
    for lang in langs:
        t = phrases(lang)
        for shape in SHAPES:
            for colour in COLOURS:
                for size in SIZES:
                    for cell in CELLS:
                        obj = Obj(shape, colour, size, cell)
                        out += [t.describe_object(obj), t.answer_object(obj)]
                out += [
                    t.question_colour(Obj(shape, colour, "small", "top_left")),
                    t.question_position(Obj(shape, colour, "small", "top_left")),
                    t.refer_object(Obj(shape, colour, "small", "top_left")),
                    t.edit_colour(Obj(shape, "red", "small", "top_left"), colour),
                    t.colour_name(colour, shape),
                ]
            out.append(t.shape_name(shape))
        for cell in CELLS:
            out += [
                t.question_shape(cell),
                t.question_object(cell),
                t.refer_position(cell),
                t.location_answer(cell),
            ]
        for bg in BACKGROUNDS:
            out += [t.backgrounds[bg], t.edit_background(bg)]
        out += [t.question_count()] + [t.count_answer(n) for n in (1, 2, 3, 4)]
    return out
