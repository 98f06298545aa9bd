"""Street addresses: a house number beside a street name, unit lines, post-office boxes.

Addresses are found line by line: a street line (``24 Clarke Avenue``, ``Skogstien 106``,
``594 Hegedûs Gyula utca 76.``) is anchored on a street word (a Faker street type or stem, or an
English street type) next to a house number. On one line the address extends over a following unit
("Apt. 289"), town and country; split over lines, each line is its own span, so a form's address block
reads as its parts.
"""

from __future__ import annotations

import itertools
import re

from faker.providers.address.en_US import Provider as en_US_address

from .. import types as t
from ..types import Finding, Recognizer
from . import lexicon

_EN_ABBREVIATIONS = (
    "street|st|avenue|ave|road|rd|lane|ln|drive|dr|boulevard|blvd|court|ct|way|place|pl|square|sq|terrace|"
    "parkway|pkwy|circle|cir|highway|hwy|trail|path|crescent|close|grove|gardens|row|alley|plaza|walk|view|"
    "hill|heights|park|mews|wharf|quay|ridge|loop|pike|run|crossing|point|port|fork|village"
)
# English street types: the common abbreviations plus Faker's US street suffixes ("Rapids", "Turnpike").
_EN_STREET_TYPES = "|".join(
    sorted(
        {*_EN_ABBREVIATIONS.split("|"), *(w.casefold() for w in en_US_address.street_suffixes)}, key=len, reverse=True
    )
)
_UNIT = r"(?:Apt\.?|Apartment|Suite|Ste\.?|Unit|Flat|Room|Rm\.?|Floor|Fl\.?|Bldg\.?|Building)\s*#?\s*\d+[A-Za-z]?"
_WORD = r"[^\W\d_][\w'’.-]*"

_UNIT_RE = re.compile(rf"(?<![\w]){_UNIT}(?![\w])")
_BOX_RE = re.compile(
    r"(?<![\w])(?:P\.?\s?O\.?\s?Box\s+\d+|(?:PSC\s+\d+,\s*Box|Unit\s+\d+\s+Box)\s+\d+(?:\n(?:APO|FPO|DPO)\s+(?:AA|AE|AP)\s+\d{5})?)"
    r"(?![\w])",
    re.I,
)
_MILITARY_RE = re.compile(r"(?<![\w])(?:APO|FPO|DPO)\s+(?:AA|AE|AP)\s+\d{5}(?![\w])")
# "<number> <words> <street type>" (English) or "<words> <number>" (continental), optionally led by a number.
_CAP_WORD = r"(?:[^\W\d_a-z][\w'’.-]*|\d+(?:st|nd|rd|th))"
_EN_LINE = re.compile(
    rf"(?<![\w])\d{{1,6}}[A-Za-z]?(?:[ \t]+{_CAP_WORD}){{1,5}}[ \t]+(?i:{_EN_STREET_TYPES})\.?(?![\w])"
    rf"(?:[ \t]+(?:N|S|E|W|NE|NW|SE|SW)\.?(?![\w]))?"
)
_CONTINENTAL_LINE = re.compile(
    rf"(?<![\w])(\d{{1,6}}[ \t]+)?(?:{_WORD}[ \t]+){{0,4}}{_WORD}[ \t]+\d{{1,5}}[A-Za-z]?\.?(?![\w])"
)


_BLOCK_LINE = re.compile(
    rf"(?:{_UNIT}|(?:{_WORD}[ ,]*){{1,5}}(?:\(?{_WORD}\)?)?[ ,]*(?:\d{{3,6}}(?:-\d{{3,4}})?)?"
    rf"|\d{{4,6}}|,?\s*[A-Z]{{2}})"
)


_WORD_RE = re.compile(_WORD)
_US_SUFFIXES = "|".join(sorted(set(en_US_address.street_suffixes)))
_NAMED_STREET = re.compile(rf"(?<![\w])(?:[A-Z][\w'’.-]*[ \t]+){{1,3}}(?:{_US_SUFFIXES})(?:[ \t]+St\.?)?(?![\w])")
_TOWN_ONLY = re.compile(r",\s*((?:[^\W\d_][\w'’.-]*)(?:\s[^\W\d_][\w'’.-]*){0,3})")
_CORNER = re.compile(
    r"(?:(?i:the corner of)\s+([^\n.,;:]{2,50}?\d*\.?)"
    r"|(?:(?<=\bat )|(?<=\bto )|(?<=: ))([A-Z0-9][^\n.,;:]{1,49}?\d*\.?))"
    r"\s+and\s+([^\n,;?!.]{2,40}?)(?=[.,;?!]|\n|$)"
)
# Streets named after their type: "62 Rue Gafsa", "1610 ul. Zakrzowska", "Avenida de la Paz".
_PREFIX_LINE = re.compile(
    rf"(?<![\w])\d{{1,6}}[ \t]+(?:Rue|rue|Rua|rua|Rúa|Via|Viale|Calle|Carrer|C/|Avenida|Avda\.|Avenue|Av\.|Avinguda|"
    rf"Paseo|Strada|Str\.|ul\.|al\.|Boulevard|Bd\.?|Place|Pl\.|Largo|Travessa|Praça)"
    rf"(?:[ \t]+(?:{_WORD}|\d{{1,5}}))"
    rf"(?:[ \t]+(?:[A-Z][\w'’.-]*|de|del|da|do|dos|das|la|le|les|des|di|dei|della|du|e|y|\d{{1,5}}))*"
)
# "2 March 2021" has the shape of a street line; months and weekdays are never street names on their own.
_CALENDAR = lexicon.words(
    "january february march april may june july august september october november december jan feb mar apr jun "
    "jul aug sep sept oct nov dec monday tuesday wednesday thursday friday saturday sunday"
)
# "in Costamezzana 43015", "in ÖVERTURINGEN 840 24": a postcode written after the town it belongs to.
_TOWN_POSTCODE = re.compile(
    r"(?<=\bin )[A-ZÀ-Þ][\w'’.-]*(?: [A-ZÀ-Þa-z][\w'’.-]*){0,3} (\d{3,5}(?:[ -]\d{2,4})?)(?![\w-])"
)
_UNIT_WORDS = lexicon.words("apt apartment suite ste unit flat room rm floor fl bldg building box psc no")
# Street types written in lower case inside a street name ("Piroska u. 97.", "Csabai kapu 39.").
_LOWER_STREET_TYPES = lexicon.words(
    "u. utca út tér körút sor köz kapu ulica ul. al. aleja rua rue via viale calle avenida strada str str. vej gade "
    "gata gatan straße strasse weg laan plein ulitsa pr. prospekt"
)
_TAIL_WORDS = lexicon.words("nan de del do da dos das di la le nad pod am an der")
_HOUSE_NUMBER = re.compile(r"(?<=[ \t])\d{1,5}(?:[A-Z]|[a-rt-z](?![a-z]))?\.?(?![\w])")  # not "70s"
_LEADING_NUMBER = re.compile(r"(?<![\w])\d{1,6}[ \t]+")
_TAIL_PIECE = re.compile(rf"[ ,]+({_UNIT}|\d{{3,6}}(?:-\d{{3,4}})?|{_WORD})")


class AddressRecognizer(Recognizer):
    """Street lines, units and boxes, as STREET_ADDRESS."""

    name = "address"
    entities = (t.STREET_ADDRESS,)
    languages = ("en",)

    def __init__(self) -> None:
        self._street_words = lexicon.street_words()
        self._common = lexicon.common_words()
        self._places = lexicon.places()

    def _is_street(self, words: list[str]) -> bool:
        for word in words:
            key = word.casefold().rstrip(".")
            if key in self._street_words or word.casefold() in _LOWER_STREET_TYPES or key in _LOWER_STREET_TYPES:
                return True
            if any(key.endswith(s) for s in ("vej", "gatan", "gata", "straße", "strasse", "weg", "laan", "utca",
                                               "katu", "tie", "gade", "veien", "vegen", "stien", "ulica", "straat",
                                               "platz", "allee", "gasse", "ská", "ova", "ová")):  # fmt: skip
                return True
        return False

    def _street_lines(self, text: str) -> list[tuple[int, int, float]]:
        spans = []
        for m in _EN_LINE.finditer(text):
            lead = _LEADING_NUMBER.search(text, max(0, m.start() - 8), m.start())
            start = lead.start() if lead is not None and lead.end() == m.start() else m.start()
            spans.append((start, m.end(), 0.8))
        for m in _PREFIX_LINE.finditer(text):
            spans.append((m.start(), m.end(), 0.8))
        # Continental lines end in a house number: look back from every number over up to five words.
        for num in _HOUSE_NUMBER.finditer(text):
            line_start = text.rfind("\n", 0, num.start()) + 1
            words = list(_WORD_RE.finditer(text, line_start, num.start()))[-5:]
            words = [w for w in words if not text[w.end() : num.start()].strip(" \t").count(",")]
            if words and words[-1].group().casefold().rstrip(".") in _UNIT_WORDS:
                continue  # "Apt. 595" is a unit, not a street
            first = None
            for k in range(len(words)):
                chunk = words[k:]
                gaps_ok = all(text[x.end() : y.start()] in (" ", "\t") for x, y in itertools.pairwise(chunk))
                if not gaps_ok or text[chunk[-1].end() : num.start()] not in (" ", "\t"):
                    continue
                names = [w.group() for w in chunk]
                if not all(self._street_part(w) for w in names) or any(w.casefold() in _CALENDAR for w in names):
                    continue
                if self._is_street(names) or (names[0][:1].isupper() and self._house_before(text, chunk[0].start())):
                    first = chunk[0].start()
                    break
            if first is None:
                continue
            lead = _LEADING_NUMBER.search(text, max(line_start, first - 8), first)
            start = lead.start() if lead is not None and lead.end() == first else first
            spans.append((start, num.end(), 0.8 if self._is_street([w.group() for w in words]) else 0.7))
        return spans

    def _street_part(self, word: str) -> bool:
        """A word that can be part of a street name: capitalised, a particle, or a street type ("utca", "u.")."""
        key = word.casefold()
        if key in _TAIL_WORDS or key in _LOWER_STREET_TYPES:
            return True
        if word[:1].isupper():
            return key not in self._common or key in self._street_words
        return key.rstrip(".") in self._street_words and key not in self._common

    @staticmethod
    def _house_before(text: str, position: int) -> bool:
        lead = _LEADING_NUMBER.search(text, max(0, position - 8), position)
        return lead is not None and lead.end() == position

    def _block_lines(self, text: str, end: int) -> list[tuple[int, int]]:
        """The lines after a street line that continue the address (units, towns, "Country 12345")."""
        lines = []
        pos = end
        for _ in range(5):
            if pos >= len(text) or text[pos] != "\n":
                break
            if text.startswith("\n\n", pos) and lines:
                pos += 1  # one blank line may separate the town from the country
            nxt = text.find("\n", pos + 1)
            nxt = len(text) if nxt < 0 else nxt
            raw = text[pos + 1 : nxt]
            body = raw.strip(" >\t,.?!;:")
            if not body or len(body) > 60 or not _BLOCK_LINE.fullmatch(body):
                break
            offset = pos + 1 + raw.index(body)
            lines.append((offset, offset + len(body)))
            pos = nxt
        return lines

    def _components(self, text: str, start: int, end: int) -> list[Finding]:
        """A line of an address block, split as a form reads it: house number, street, unit, town, postcode."""
        body = text[start:end]
        out = []
        if _UNIT_RE.fullmatch(body):
            return [Finding(t.STREET_ADDRESS, start, end, 0.7, self.name)]
        m = re.fullmatch(r"(.*?)[ ,]*(\d{4,6}(?:-\d{3,4})?)", body)
        if m and m.group(1):
            place = m.group(1).strip(" ,")
            p_start = start + body.index(place) if place else start
            if place and place.casefold() != "nan":
                out.append(Finding(t.LOCATION, p_start, p_start + len(place), 0.75, self.name))
            out.append(Finding(t.STREET_ADDRESS, start + m.start(2), start + m.end(2), 0.7, self.name))
            return out
        if re.fullmatch(r"\d{4,6}", body):
            return [Finding(t.STREET_ADDRESS, start, end, 0.7, self.name)]
        for part in re.finditer(r"[^,]+", body):
            piece = part.group().strip()
            if piece and piece.casefold() != "nan" and not re.fullmatch(r"[A-Z]{2}", piece):
                p_start = start + part.start() + part.group().index(piece)
                out.append(Finding(t.LOCATION, p_start, p_start + len(piece), 0.75, self.name))
        return out

    def find(self, text: str, language: str) -> list[Finding]:
        out: list[Finding] = []
        for start, end, score in self._street_lines(text):
            line_start = text.rfind("\n", 0, start) + 1
            inline = bool(text[line_start:start].strip(" >\t?:"))
            block = self._block_lines(text, self._line_tail(text, end))
            tail = text[end : self._line_tail(text, end)]
            town = _TOWN_ONLY.fullmatch(tail)
            head = re.match(r"(\d{1,6})\s+(?=\S*\D)", text[start:end])
            if inline and not block and town and head and not _EN_LINE.fullmatch(text[start:end]):
                # "lives at 5049 Harjukuja 54, SEINÄJOKI": house number, street and town, as a form would split them.
                out.append(Finding(t.STREET_ADDRESS, start, start + len(head.group(1)), 0.8, self.name))
                out.append(Finding(t.STREET_ADDRESS, start + head.end(), end, 0.9, self.name))
                out.append(Finding(t.LOCATION, end + town.start(1), end + town.end(1), 0.8, self.name))
                continue
            if inline or not block:
                # Inside a sentence, the address is one span over its whole block.
                last = block[-1][1] if block else self._line_tail(text, end)
                while last > start and text[last - 1] in ".,;:!? ":
                    last -= 1
                out.append(Finding(t.STREET_ADDRESS, start, last, min(score + 0.15, 0.94), self.name))
                continue
            # At the head of a block (a form, a letter), each part of the address is its own span.
            head = re.match(r"(\d{1,6})\s+(?=\S*\D)", text[start:end])
            street_start = start
            if head and not _EN_LINE.fullmatch(text[start:end]):
                out.append(Finding(t.STREET_ADDRESS, start, start + len(head.group(1)), 0.75, self.name))
                street_start = start + head.end()
            line_end = self._line_tail(text, end)
            unit = _UNIT_RE.search(text, end, line_end)
            out.append(Finding(t.STREET_ADDRESS, street_start, end, score + 0.05, self.name))
            if unit is not None:
                out.append(Finding(t.STREET_ADDRESS, unit.start(), unit.end(), 0.75, self.name))
            for b_start, b_end in block:
                out.extend(self._components(text, b_start, b_end))
        for m in _UNIT_RE.finditer(text):
            out.append(Finding(t.STREET_ADDRESS, m.start(), m.end(), 0.6, self.name))
        out.extend(self._intersections(text))
        for m in _TOWN_POSTCODE.finditer(text):
            out.append(Finding(t.ZIP_CODE, m.start(1), m.end(1), 0.6, self.name))
        for m in _NAMED_STREET.finditer(text):
            out.append(Finding(t.STREET_ADDRESS, m.start(), m.end(), 0.5, self.name))
        for regex in (_BOX_RE, _MILITARY_RE):
            for m in regex.finditer(text):
                out.append(Finding(t.STREET_ADDRESS, m.start(), m.end(), 0.8, self.name))
        return out

    def _intersections(self, text: str) -> list[Finding]:
        """ "the corner of Beiteveien 2 and Sieda Radial": one place, named by two streets."""
        out = []
        for m in _CORNER.finditer(text):
            sides = (m.group(1) or m.group(2), m.group(3))
            if any(re.search(r"\d", x) or self._is_street(_WORD_RE.findall(x)) for x in sides):
                end = m.end()
                while text[end - 1] in ".,;:!? ":
                    end -= 1
                out.append(Finding(t.STREET_ADDRESS, m.start(), end, 0.945, self.name))
        return out

    def _line_tail(self, text: str, end: int) -> int:
        """Where the address on a street line ends: over following units, towns, state codes and postcodes."""
        line_end = text.find("\n", end)
        line_end = len(text) if line_end < 0 else line_end
        tail = end
        while (piece := _TAIL_PIECE.match(text, tail, line_end)) is not None:
            word = piece.group(1)
            if not (word[:1].isdigit() or word[:1].isupper() or word.casefold() in _TAIL_WORDS):
                break
            tail = piece.end()
        return tail
