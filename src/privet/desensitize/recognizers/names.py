"""Dictionary and context recognizers for English text: people, places, organisations, titles, groups.

They work on one tokenisation of the document. A person is a run of capitalised tokens that a name
dictionary or a context ("my name is", "Mr.") vouches for; a place is a dictionary phrase in title or
upper case; an organisation is a capitalised run ending in a company word, or a Faker-style firm name
("Davis, Reynolds and Williamson"), or an unknown capitalised word where an employer is expected.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from dataclasses import dataclass
from functools import cache

import ahocorasick

from .. import types as t
from ..engine import context_regex
from ..types import Finding, Recognizer
from . import lexicon

_TOKEN = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*\.?")

_ORG_SUFFIXES = lexicon.words(
    "inc inc. llc llc. ltd ltd. corp corp. corporation co. company group plc gmbh ag sa s.a. bank university "
    "institute foundation systems technologies technology solutions partners holdings labs industries enterprises "
    "associates consulting international services networks software media capital ventures pharmaceuticals "
    "hospital clinic agency association analytics insurance airlines motors energy logistics "
    "communications trust fund council society college school academy ministry department club"
)
_PERSON_CONTEXT = (
    "name is", "name:", "named", "called", "dear", "hi ", "hello", "mr", "mrs", "ms", "dr", "miss", "patient",
    "by ", "i am", "i'm", "call me", "son", "daughter", "wife", "husband", "mother", "father", "brother", "sister",
    "kid", "friend", "name on", "user:", "spoke to", "met", "told", "asked", "signed", "author", "contact",
)  # fmt: skip
_STRONG_PERSON_CONTEXT = (
    "name is", "name:", "named", "name on the account", "last name?", "first name?", "your name?", "user:",
)  # fmt: skip
_PLACE_CONTEXT = (
    "from ", "in ", "to ", "at ", "near", "visit", "moved", "live", "city", "country", "born in", "flew", "travel",
    "located", "based in", "capital",
)  # fmt: skip
_EMPLOYER_CONTEXT = (
    "work for", "works for", "worked for", "working for", "work at", "works at", "worked at", "working at",
    "joined", "employed by", "employee of", "ceo of", "company", "support", "according to the", "at", "for",
    "address of", "later became",
)  # fmt: skip
_JOB_CONTEXT = ("as a", "as an", "as ", "work as", "job", "position", "title", "occupation", "profession", "role")
_JOB_HEADS = (
    "scientist|technician|technologist|manager|attendant|installer|director|clerk|engineer|officer|assistant|nurse|"
    "teacher|worker|operator|designer|analyst|consultant|specialist|administrator|coordinator|supervisor|inspector|"
    "therapist|accountant|architect|developer|programmer|physician|surgeon|doctor|dentist|pharmacist|lawyer|"
    "solicitor|barrister|editor|writer|journalist|producer|photographer|cinematographer|musician|singer|artist|"
    "chef|cook|driver|pilot|mechanic|electrician|plumber|carpenter|farmer|soldier|librarian|secretary|receptionist|"
    "cashier|salesman|saleswoman|representative|agent|broker|buyer|planner|surveyor|geologist|chemist|physicist|"
    "biologist|economist|statistician|psychologist|counsellor|counselor|advisor|adviser|executive|president|"
    "chairman|ceo|cto|cfo|professor|lecturer|tutor|researcher|investigator|auditor|controller|treasurer|banker|"
    "trader|estimator|fitter|machinist|welder|labourer|laborer|cleaner|guard|firefighter|paramedic|"
    "midwife|optometrist|radiographer|sonographer|echocardiographer|veterinarian|vet|instructor|trainer|coach|"
    "curator|archivist|translator|interpreter|officer|steward|stewardess|waiter|waitress|bartender|host|"
    "hostess|housekeeper|nanny|caretaker|gardener|landscaper|decorator|tailor|dresser|model|actor|actress|dancer|"
    "composer|conductor|animator|illustrator|copywriter|technologist|hygienist|therapist|associate|partner|"
    "lead|head|chief|intern|apprentice|volunteer|student|scheduler|dispatcher|examiner|adjuster|underwriter"
)
_JOB_RE = re.compile(rf"(?<![\w])(?:[A-Za-z][\w/'’-]*,?\s+){{0,4}}(?:{_JOB_HEADS})(?:s)?(?![\w])", re.I)
# "Marie Langrová, the Packager, said": a capitalised apposition after a name is a job title.
_APPOSITION = re.compile(r"(?<=[a-z], the )([A-Z][\w'’-]*(?: [a-z][\w'’-]*){0,3})(?=, (?:said|says|told|wrote|added))")
_PLACE_PREPOSITIONS = (
    "flew to", "fly to", "in", "to", "from", "near", "based in", "grew up in", "home city", "arrived at", "returned to",
    "moved to", "trip to", "visit", "visited", "lives in", "live in", "located in", "born in", "city of",
)  # fmt: skip
# Capitalised words at the start of lines and messages that name no one.
_NOT_NAMES = lexicon.words(
    "hi hello hey dear thanks thank regards date user bot info fax phone email address name title re fw subject "
    "note notes dr mr mrs ms sir madam yes no ok okay please sorry apt apartment suite unit box floor room street road "
    "avenue lane"
)
_CONTRACTION = re.compile(r"['’](?:m|s|re|ll|ve|d|t)$")
_JOB_WORDS = frozenset(_JOB_HEADS.split("|"))
_SPEAKER = re.compile(r"(?m)^[ \t>]*([^\W\d_][\w'’-]+)[ \t]*:(?=[ \t]*\S)")
_NAME_LINE = re.compile(r"(?m)^[ \t>]*((?:[^\W\d_][\w'’-]*\.?[ \t]+){1,3}[^\W\d_][\w'’-]+)[ \t]*$")
_LINE_BODY = re.compile(r"(?m)^[ \t>?]*(.*?)[ \t]*$")
_DETERMINER = re.compile(r"(?:^|\W)(?:the|a|an)\s+$")
_LANGUAGE_BEFORE = re.compile(r"(?:speaks?|speaking|studying|study|studied|learn|learning|learned|in|into|from)\s+$")
_LANGUAGE_AFTER = re.compile(r"\s+(?:language|class|classes|lessons?|course|literature|translation|grammar|words?)\b")
_LOCATIVE = (" in", " from", " to", " at", " near")
_ORG_BEFORE_CONTEXT = re.compile(
    r"(?<![\w])(?:The )?((?:[A-Z][\w'’&.-]*)(?: (?:[A-Z][\w'’&.-]*|And|and|of|&))*?)(?: Orchestra)?"
    r"(?= (?:office|is the brainchild|is a design agency|is an? [\w ]*(?:company|firm|bank|agency|corporation|startup)"
    r"|is a 501|website|resignation|employees|headquarters|was founded|is hiring|stock|shares|customers)\b)"
    r"|(?<=address of )([A-Z][\w'’&.-]*(?: [A-Z][\w'’&.-]*){0,3})(?= is )"
)
_PERSON_VERBS = lexicon.words(
    "is was has had lives lived spent will would shouted said says told asked and or wrote sang founded "
    "joined works worked met called"
)
_LIST_RE = re.compile(r"(?:[A-Z][^\W\d_]+(?:['’-][^\W\d_]+)*, ){2,}[A-Z][^\W\d_]+(?:, | and )[A-Z][^\W\d_]+")
_WORD_START = re.compile(r"(?<!\S)\S")  # the first character of every run of non-space (of every \S+ match)
_OPENERS = " \t\"'“‘(>"  # spaces, quotes and brackets, skipped when looking back for the end of a sentence


@dataclass(slots=True)
class _Token:
    start: int
    end: int
    text: str
    key: str  # case-folded, without a trailing dot
    cap: bool
    upper: bool
    sentence_start: bool


def _tokens(text: str) -> list[_Token]:
    out = []
    previous_end = 0  # where the previous match ended: its last character (a letter or ".") is never skipped
    for m in _TOKEN.finditer(text):
        word = m.group()
        if word[-2:] in ("'s", "’s"):
            word = word[:-2]
        core = word[:-1] if word.endswith(".") else word
        # The character before the word, quotes and spaces skipped: only the gap since the previous match is
        # looked at (copying all the text before every word made long texts quadratic).
        gap = text[previous_end : m.start()].rstrip(_OPENERS)
        before = gap[-1] if gap else text[previous_end - 1] if previous_end else ""
        sentence_start = not before or before in ".!?:\n;"
        previous_end = m.end()
        end = m.start() + len(word)
        # A trailing dot belongs to abbreviations and initials, not to the last word of a sentence.
        if word.endswith(".") and len(core) > 3 and core.casefold() not in _ORG_SUFFIXES:
            end -= 1
            word = core
        out.append(
            _Token(
                m.start(),
                end,
                word,
                core.casefold(),
                core[:1].isupper(),
                core.isupper() and len(core) > 1,
                sentence_start,
            )
        )
    return out


def _same_length_lower(text: str) -> str:
    """Case-folded text whose offsets match ``text`` (casefold turns "ß" into "ss"; such characters stay)."""
    folded = text.casefold()
    if len(folded) == len(text):
        return folded
    return "".join(f if len(f := c.casefold()) == 1 else c for c in text)


def _shouting(line: str) -> bool:
    """Whether ``line`` is written in capitals: more than 12 letters, over 80% of them upper case."""
    letters = "".join(filter(str.isalpha, line))
    return len(letters) > 12 and sum(map(str.isupper, letters)) > 0.8 * len(letters)


def _title_case(line: str) -> bool:
    """Whether ``line`` is a headline or a list of titles: 4 or more words, 70% or more of them capitalised."""
    initials = "".join(filter(str.isalpha, _WORD_START.findall(line)))  # of the words that begin with a letter
    if len(initials) < 4:
        return False
    return sum(map(str.isupper, initials)) >= 0.7 * len(initials)


class _Lines:
    """What is true of each line of one text, worked out once per line when first asked.

    Every candidate word asks about its line; on a text that is one long line, scanning the line each time
    made the recognizer quadratic. One instance per :meth:`EnglishEntityRecognizer.find` call (the recognizer
    itself is shared between threads).
    """

    __slots__ = ("_breaks", "_shouting", "_text", "_title_case")

    def __init__(self, text: str) -> None:
        self._text = text
        self._breaks: list[int] | None = None  # offsets of the newlines, found on first use
        self._shouting: dict[int, bool] = {}
        self._title_case: dict[int, bool] = {}

    def _line(self, position: int) -> tuple[int, int, int]:
        """(number, start, end) of the line holding ``position``, as ``rfind``/``find`` of newlines would give."""
        if self._breaks is None:
            self._breaks = [m.start() for m in re.finditer("\n", self._text)]
        k = bisect_left(self._breaks, position)
        start = self._breaks[k - 1] + 1 if k else 0
        end = self._breaks[k] if k < len(self._breaks) else len(self._text)
        return k, start, end

    def shouting(self, position: int) -> bool:
        k, start, end = self._line(position)
        if k not in self._shouting:
            self._shouting[k] = _shouting(self._text[start:end])
        return self._shouting[k]

    def title_case(self, position: int) -> bool:
        k, start, end = self._line(position)
        if k not in self._title_case:
            self._title_case[k] = _title_case(self._text[start:end])
        return self._title_case[k]


def _automaton(words: frozenset[str]) -> ahocorasick.Automaton:
    automaton = ahocorasick.Automaton()
    for word in words:
        automaton.add_word(word, len(word))
    automaton.make_automaton()
    return automaton


def _is_word_boundary(text: str, start: int, end: int) -> bool:
    return (start == 0 or not (text[start - 1].isalnum() or text[start - 1] in "'’")) and (
        end == len(text) or not (text[end].isalnum() or text[end] in "'’")
    )


@cache
def _context_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    return context_regex(words)


def _context(lower: str, start: int, end: int, words: tuple[str, ...], before: int = 24, after: int = 0) -> bool:
    """Whether a context word (whole word, as the analyzer matches them) is just before or after the span."""
    pattern = _context_pattern(words)
    return bool(
        pattern.search(lower, max(0, start - before), start) or (after and pattern.search(lower, end, end + after))
    )


class EnglishEntityRecognizer(Recognizer):
    """People, places, organisations, titles and nationality/religious/political groups in English text."""

    name = "en_entities"
    entities = (t.PERSON, t.LOCATION, t.ORGANIZATION, t.TITLE, t.NRP)
    languages = ("en",)

    def __init__(self) -> None:
        self._first = lexicon.first_names()
        self._last = lexicon.last_names()
        self._common = lexicon.common_words()
        self._vocabulary = lexicon.english_vocabulary()
        self._places = lexicon.places()
        self._countries = lexicon.countries()
        self._honorifics = frozenset(lexicon.HONORIFICS)
        self._world = lexicon.world_places()
        self._place_ac = _automaton(frozenset(p for p in self._places if p not in self._common))
        self._job_ac = _automaton(lexicon.jobs())
        self._nrp_ac = _automaton(lexicon.nrp_terms())

    # -- phrases found by Aho-Corasick over the case-folded text ------------------------------------------

    def _phrases(self, text: str, lower: str, automaton: ahocorasick.Automaton) -> list[tuple[int, int]]:
        spans = []
        for end_index, length in automaton.iter(lower):
            end = end_index + 1
            start = end - length
            if _is_word_boundary(text, start, end):
                spans.append((start, end))
        # Keep the longest phrase at each position.
        spans.sort(key=lambda s: (s[0], -(s[1] - s[0])))
        out: list[tuple[int, int]] = []
        for s in spans:
            if out and s[0] < out[-1][1]:
                continue
            out.append(s)
        return out

    def _places_found(self, text: str, lower: str) -> list[Finding]:
        out = []
        for start, end in self._phrases(text, lower, self._place_ac):
            words = text[start:end].split()
            if not all(
                w[:1].isupper() or w.casefold() in lexicon.NAME_PARTICLES or w in {"nad", "pod", "am"} for w in words
            ):
                continue
            key = lower[start:end]
            score = 0.75 if key in self._countries else 0.55
            if (
                key in self._first
                and key not in self._countries
                and not lower[max(0, start - 6) : start].rstrip().endswith(_LOCATIVE)
            ):
                score -= 0.2  # "leave me Victoria": a first name unless a preposition makes it a place
            if text[start:end].isupper() and len(key) > 3:
                score += 0.1
            if _context(lower, start, end, _PLACE_CONTEXT, before=12):
                score += 0.2
            out.append(Finding(t.LOCATION, start, end, min(score, 0.95), self.name))
        return out

    def _jobs_found(self, text: str, lower: str) -> list[Finding]:
        out = []
        for start, end in self._phrases(text, lower, self._job_ac):
            has_context = _context(lower, start, end, _JOB_CONTEXT, before=14)
            if not (text[start].isupper() or has_context):
                continue
            out.append(Finding(t.TITLE, start, end, 0.7 if has_context else 0.5, self.name))
        # Job titles outside the dictionary: a short phrase ending in a job noun, after "as" or alone on a line.
        for line in re.finditer(r"[^\n]+", text):
            body = line.group().strip(" >?\t")
            offset = line.start() + line.group().index(body) if body else 0
            m = _JOB_RE.fullmatch(body) if body and len(body) <= 60 else None
            if m:
                out.append(Finding(t.TITLE, offset, offset + len(body), 0.6, self.name))
        for m in re.finditer(
            rf"(?<=\bas )(?:an? |the )?((?:[A-Za-z][\w/-]*\s+){{0,4}}(?:{_JOB_HEADS})s?)(?![\w])", text, re.I
        ):
            out.append(Finding(t.TITLE, m.start(1), m.end(1), 0.65, self.name))
        for m in _APPOSITION.finditer(text):
            out.append(Finding(t.TITLE, m.start(1), m.end(1), 0.65, self.name))
        return out

    def _context_places(self, text: str, lower: str, tokens: list[_Token]) -> list[Finding]:
        """Unknown capitalised words where a place is expected ("flew to Loeches", "grew up in Remniku")."""
        out = []
        n = len(tokens)
        for i, tok in enumerate(tokens):
            if not tok.cap or tok.key in self._common or tok.key in self._honorifics:
                continue
            if (tok.key in self._first or tok.key in self._vocabulary) and tok.key not in self._world:
                continue
            prefix = lower[max(0, tok.start - 14) : tok.start].rstrip()
            if not any(prefix.endswith(p) for p in _PLACE_PREPOSITIONS):
                continue
            j = i
            while (
                j + 1 < n
                and text[tokens[j].end : tokens[j + 1].start] == " "
                and (
                    tokens[j + 1].cap
                    or (tokens[j + 1].key in lexicon.NAME_PARTICLES and j + 2 < n and tokens[j + 2].cap)
                )
            ):
                j += 1
            run = tokens[i : j + 1]
            if any(len(x.key) == 1 for x in run) or (tok.upper and j == i and len(tok.key) <= 3):
                continue  # "from Faina D. Yefremova" is a person; "in ATM" an acronym
            known = lower[tok.start : tokens[j].end] in self._world or tok.key in self._world
            out.append(Finding(t.LOCATION, tok.start, tokens[j].end, 0.7 if known else 0.55, self.name))
        return out

    def _nrp_found(self, text: str, lower: str) -> list[Finding]:
        out = []
        for s, e in self._phrases(text, lower, self._nrp_ac):
            # "studying English", "speaks Greek", "English class": a language, not a group of people.
            if _LANGUAGE_BEFORE.search(lower, max(0, s - 14), s) or _LANGUAGE_AFTER.match(lower, e):
                continue
            out.append(Finding(t.NRP, s, e, 0.7, self.name))
        return out

    # -- people, titles, organisations from the token stream -----------------------------------------------

    def _name_score(self, tok: _Token) -> float:
        if tok.key in self._first:
            return 0.6 if tok.key in self._last or tok.key not in self._common else 0.3
        if tok.key in self._last:
            return 0.45 if tok.key not in self._common else 0.2
        return 0.0

    def _proper_noun(self, text: str, lines: _Lines, tokens: list[_Token], i: int, j: int) -> bool:
        """An unknown capitalised run that reads as a name: not a common word, not an all-caps acronym."""
        first = tokens[i]
        if any(
            tok.key in self._common or tok.key in self._places or tok.key in self._vocabulary for tok in tokens[i:j]
        ):
            return False
        if first.upper and j - i == 1:
            return False
        if lines.title_case(first.start):
            return False  # a headline or a list of genres, where every word is capitalised
        if not first.sentence_start:
            return True
        follower = tokens[j].key if j < len(tokens) else ""
        return follower in _PERSON_VERBS or text[tokens[j - 1].end : tokens[j - 1].end + 2] in ("'s", "’s")

    def _speakers_and_name_lines(self, text: str) -> list[Finding]:
        """Dialogue speakers ("Vinka: What a wife.") and lines that hold only a name (letter heads, forms)."""
        out = []
        for m in _SPEAKER.finditer(text):
            key = m.group(1).casefold()
            if key in self._common or key in _NOT_NAMES or m.group(1).isupper():
                continue
            line_end = text.find("\n", m.end())  # not a copy of the rest of the text per speaker
            rest = text[m.end() : line_end if line_end >= 0 else len(text)].strip()
            if key in self._first or key in self._last or rest[:1] in "\"“'" or rest[-1:] in '.?!"”':
                out.append(Finding(t.PERSON, m.start(1), m.end(1), 0.5, self.name))
        for m in _NAME_LINE.finditer(text):
            words = [w.rstrip(".") for w in m.group(1).split()]
            keys = [w.casefold() for w in words]
            if not all(w[:1].isupper() for w in words) or any(k in self._common or k in _NOT_NAMES for k in keys):
                continue
            if any(k in _ORG_SUFFIXES or k in _JOB_WORDS for k in keys) or words[0].isupper():
                continue
            out.append(Finding(t.PERSON, m.start(1), m.end(1), 0.45, self.name))
        return out

    def _lists(self, text: str) -> list[Finding]:
        """Every capitalised item of a list in which most items are known first names is a person."""
        out = []
        for m in _LIST_RE.finditer(text):
            items = [(x.start(), x.end()) for x in re.finditer(r"[^\W\d_]+(?:['’-][^\W\d_]+)*", m.group())]
            items = [(m.start() + a, m.start() + b) for a, b in items if m.group()[a:b] != "and"]
            known = sum(text[a:b].casefold() in self._first for a, b in items)
            if known * 2 >= len(items):
                out.extend(Finding(t.PERSON, a, b, 0.8, self.name) for a, b in items)
        return out

    def _name_like(self, tok: _Token, strong: bool) -> bool:
        """Whether a token may be part of a person's name: capitalised, and not an everyday word unless a known name.

        After "my name is" a lower-case name counts when the dictionaries know it.
        """
        if not tok.cap and not (strong and (tok.key in self._first or tok.key in self._last)):
            return False
        if _CONTRACTION.search(tok.key) or tok.key in _JOB_WORDS:
            return False
        if tok.key in self._common or tok.key in _NOT_NAMES:
            return tok.cap and tok.key in self._first and not tok.sentence_start and tok.key not in _NOT_NAMES
        return not (tok.text == "I" and tok.sentence_start)

    def _people(self, text: str, lower: str, lines: _Lines, tokens: list[_Token], caseless: bool) -> list[Finding]:
        out = []
        i = 0
        n = len(tokens)
        titled = False
        while i < n:
            tok = tokens[i]
            if tok.key in self._honorifics and tok.cap and i + 1 < n and tokens[i + 1].cap:
                out.append(Finding(t.TITLE, tok.start, tok.end, 0.85, self.name))
                titled = True
                i += 1
                continue
            strong = titled or _context(lower, tok.start, tok.start, _STRONG_PERSON_CONTEXT, before=30)
            titled = False
            if tok.key in self._places and lower[max(0, tok.start - 6) : tok.start].rstrip().endswith(_LOCATIVE):
                i += 1
                continue
            if not self._name_like(tok, strong or caseless) or tok.key in self._honorifics:
                i += 1
                continue
            # Grow a run of adjacent name-like tokens on one line ("Ravil G Yefimov", "Maika van de Noort").
            j = i + 1
            while j < n:
                cur = tokens[j]
                gap = text[tokens[j - 1].end : cur.start]
                if gap not in (" ", ". ", "") or tokens[j - 1].end == cur.start:
                    break
                is_particle = cur.key in lexicon.NAME_PARTICLES and j + 1 < n and tokens[j + 1].cap
                if len(cur.key) == 1 and cur.text[:1].isalpha() and j + 1 < n and (cur.cap or caseless):
                    is_particle = text[tokens[j + 1].start - 1] == " "  # a middle initial: "Hanne I. Kreutzmann"
                is_pronoun = cur.text == "I" and (
                    j + 1 >= n or not tokens[j + 1].cap or text[cur.end : cur.end + 1] in "'’"
                )
                if is_pronoun or not (is_particle or self._name_like(cur, strong or caseless)):
                    break
                # A surname may be a town's name ("Marta Palermo"); a place alone does not extend a run.
                place = cur.key in self._places and not self._name_score(cur)
                if place and not any(x.key in self._first for x in tokens[i:j]):
                    break
                j += 1
            run = tokens[i:j]
            if caseless and not strong and not run[0].cap and (len(run) < 2 or run[0].key not in self._first):
                i = j
                continue  # in lower-case text only "first-name surname" pairs are taken without context
            scores = [self._name_score(x) for x in run]
            known = sum(1 for x in scores if x)
            start, end = run[0].start, run[-1].end
            if text[end - 1] == "." and len(run[-1].key) > 1:
                end -= 1
            solid = sum(1 for x, sc in zip(run, scores, strict=True) if sc and x.key not in self._common)
            if strong:
                score = 0.85
            elif (known and not solid) or (run[0].upper and lines.shouting(run[0].start)):
                score = 0.0  # only everyday words ("My", "Will") or a capitalised shout vouch for it
            elif not solid and lines.title_case(start):
                score = 0.0
            elif len(run) >= 2 and known >= 1:
                score = 0.85 if known >= 2 else 0.7
            elif known:
                score = max(scores)
            elif self._proper_noun(text, lines, tokens, i, j):
                score = 0.3 if len(run) == 1 else 0.5
            else:
                score = 0.0
            if score == 0.3 and _DETERMINER.search(lower, max(0, start - 5), start):
                score = 0.0  # "the Devil", "a Shadow": a determiner rarely comes before a person's name
            if score and _context(lower, start, end, _PERSON_CONTEXT, before=16, after=0):
                score = min(0.95, score + 0.2)
            if score >= 0.2:
                out.append(Finding(t.PERSON, start, end, round(score, 3), self.name))
            i = j
        return out

    def _organisations(self, text: str, lower: str, lines: _Lines, tokens: list[_Token]) -> list[Finding]:
        out = []
        n = len(tokens)
        for i, tok in enumerate(tokens):
            if (
                tok.key.rstrip(".") + ("." if tok.text.endswith(".") else "") not in _ORG_SUFFIXES
                and tok.key not in _ORG_SUFFIXES
            ):
                continue
            if not tok.cap:
                continue
            j = i
            while j > 0 and tokens[j - 1].cap and text[tokens[j - 1].end : tokens[j].start] in (" ", " & ", ", "):
                if tokens[j - 1].sentence_start and tokens[j - 1].key in self._common:
                    break
                j -= 1
            if j < i:
                out.append(Finding(t.ORGANIZATION, tokens[j].start, tok.end, 0.8, self.name))
        # Faker-style firms: "Davis, Reynolds and Williamson", "Hill and Sons", "Kim-Lee".
        for m in re.finditer(r"\b([A-Z][\w'’]+), ([A-Z][\w'’]+) and ([A-Z][\w'’]+)\b", text):
            if "founder" in lower[max(0, m.start() - 20) : m.start()]:
                out.extend(Finding(t.PERSON, m.start(g), m.end(g), 0.85, self.name) for g in (1, 2, 3))
            else:
                out.append(Finding(t.ORGANIZATION, m.start(), m.end(), 0.75, self.name))
        for m in re.finditer(r"\b[A-Z][\w'’]+(?: and Sons|-[A-Z][\w'’]+)\b", text):
            parts = re.split(r"-| and ", m.group())
            if all(p.casefold() in self._last or p == "Sons" for p in parts):
                out.append(Finding(t.ORGANIZATION, m.start(), m.end(), 0.75, self.name))
        # An unknown capitalised word where an employer or a firm is expected.
        for i, tok in enumerate(tokens):
            if not tok.cap or tok.sentence_start or tok.key in self._common or tok.key in self._honorifics:
                continue
            if (
                tok.key in self._first
                or tok.key in self._last
                or tok.key in self._places
                or tok.key in self._vocabulary
            ):
                continue
            if not _context(lower, tok.start, tok.start, _EMPLOYER_CONTEXT, before=12):
                continue
            if lines.shouting(tok.start) or lines.title_case(tok.start):
                continue
            j = i
            while j + 1 < n and tokens[j + 1].cap and text[tokens[j].end : tokens[j + 1].start] == " ":
                j += 1
            out.append(Finding(t.ORGANIZATION, tok.start, tokens[j].end, 0.45, self.name))
        # A capitalised run followed by what is said of firms ("X is the brainchild of", "the X office").
        for m in _ORG_BEFORE_CONTEXT.finditer(text):
            group = 1 if m.group(1) else 2
            if not any(w.casefold() in self._first or w.casefold() in self._places for w in m.group(group).split()):
                out.append(Finding(t.ORGANIZATION, m.start(group), m.end(group), 0.75, self.name))
        out.extend(self._letterhead_firms(text))
        return out

    def _letterhead_firms(self, text: str) -> list[Finding]:
        """The line between a name line and an address line of a letter head or a signature is the employer."""
        lines = [(m.start(1), m.end(1), m.group(1)) for m in _LINE_BODY.finditer(text)]
        lines = [x for x in lines if x[2]]
        out = []
        for (_, _, before), (start, end, body), (_, _, after) in zip(lines, lines[1:], lines[2:], strict=False):
            heads_address = after[:1].isdigit() or after.lower().startswith(("unit", "psc"))
            if not (_NAME_LINE.fullmatch(before) and heads_address):
                continue
            words = body.split()
            if words[0].casefold() in self._first or body == before or any(len(w.rstrip(".")) == 1 for w in words):
                continue  # a second name line ("Mijail C Adomo"), not the employer
            if len(body.split()) <= 5 and not any(c.isdigit() for c in body):
                out.append(Finding(t.ORGANIZATION, start, end, 0.6, self.name))
        return out

    def find(self, text: str, language: str) -> list[Finding]:
        lower = _same_length_lower(text)
        tokens = _tokens(text)
        lines = _Lines(text)
        # In a document written all in lower case, capitals say nothing: known names count without them.
        uppers = sum(map(str.isupper, text))
        caseless = uppers * 50 < sum(map(str.isalpha, text))
        return [
            *self._people(text, lower, lines, tokens, caseless),
            *self._speakers_and_name_lines(text),
            *self._places_found(text, lower),
            *self._organisations(text, lower, lines, tokens),
            *self._jobs_found(text, lower),
            *self._context_places(text, lower, tokens),
            *self._lists(text),
            *self._nrp_found(text, lower),
        ]
