"""Word lists for dictionary recognizers, taken from Faker's locales (names, places, jobs) at first use.

Only Latin-script entries are kept for English documents. Entries that are everyday English words
("May", "Will", "Mark", "Long") are kept as names but flagged, so recognizers can ask for more evidence.
"""

from __future__ import annotations

import gzip
import importlib
import json
import pkgutil
import re
from functools import cache
from pathlib import Path
from types import ModuleType

import faker.providers.address
import faker.providers.job
import faker.providers.lorem.en_US
import faker.providers.person
import spellchecker
from phonenumbers.geodata import GEOCODE_DATA
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS


def words(text: str) -> frozenset[str]:
    """The whitespace-separated words of a literal list."""
    return frozenset(text.split())


_PLACE_PARTS = re.compile(r",| - |/|\(|\)")
_LATIN_WORD = re.compile(r"^[A-Za-z\u00c0-\u024f\u1e00-\u1eff][A-Za-z\u00c0-\u024f\u1e00-\u1eff' .-]*$")

# Nationalities, religions and political groups (NRP). Demonyms of the world's states and large regions.
NRP_TERMS = words(
    "afghan albanian algerian american andorran angolan argentine argentinian armenian australian austrian azerbaijani "
    "bahamian bahraini bangladeshi barbadian belarusian belgian belizean beninese bhutanese bolivian bosnian "
    "botswanan brazilian british bruneian bulgarian burkinabe burmese burundian cambodian cameroonian canadian "
    "chadian chilean chinese colombian congolese costa rican croatian cuban cypriot czech danish djiboutian "
    "dominican dutch ecuadorian egyptian emirati english eritrean estonian ethiopian fijian filipino finnish french "
    "gabonese gambian georgian german ghanaian greek greenlander greenlandic grenadian guatemalan guinean guyanese "
    "haitian honduran hungarian icelandic indian indonesian iranian iraqi irish israeli italian ivorian jamaican "
    "japanese jordanian kazakh kenyan korean kosovar kuwaiti kyrgyz lao laotian latvian lebanese liberian libyan "
    "lithuanian luxembourgish macedonian malagasy malawian malaysian maldivian malian maltese mauritanian mauritian "
    "mexican moldovan monegasque mongolian montenegrin moroccan mozambican namibian nepalese nepali nicaraguan "
    "nigerian nigerien norwegian omani pakistani palestinian panamanian paraguayan peruvian polish portuguese "
    "qatari romanian russian rwandan salvadoran samoan saudi scottish senegalese serbian singaporean slovak "
    "slovakian slovenian somali south african spanish sri lankan sudanese surinamese swazi swedish swiss syrian "
    "taiwanese tajik tanzanian thai togolese tongan tunisian turkish turkmen ugandan ukrainian uruguayan uzbek "
    "venezuelan vietnamese welsh yemeni zambian zimbabwean european african asian latino latina hispanic arab "
    "caucasian scandinavian nordic balkan slavic kurdish basque catalan tibetan uyghur inuit maori aboriginal "
    "christian christians muslim muslims islamic jewish jews jew buddhist buddhists hindu hindus sikh sikhs catholic "
    "catholics protestant protestants orthodox evangelical lutheran methodist baptist anglican mormon atheist "
    "agnostic shia shiite shiites shiis sunni sunnis taoist confucian jain zoroastrian pagan "
    "democrat democrats democratic republican republicans communist communists socialist socialists conservative "
    "conservatives liberal liberals libertarian labour tory tories green greens nationalist marxist"
)

_NRP_PHRASES = ("costa rican", "south african", "sri lankan", "new zealander", "puerto rican", "saudi arabian")

HONORIFICS = (
    "mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "madam", "dame", "lord", "lady", "rev", "fr", "hon",
    "mister", "doctor", "professor", "captain", "capt", "sgt", "lt", "col", "gen", "judge",
)  # fmt: skip

NAME_PARTICLES = words(
    "van von der den de da das dos di del della la le du bin ibn al el ben mac mc st ter ten dei y e"
)


def _modules(package: ModuleType) -> list[ModuleType]:
    return [importlib.import_module(f"{package.__name__}.{m.name}") for m in pkgutil.iter_modules(package.__path__)]


def _strings(package: ModuleType, *attributes: str) -> set[str]:
    out: set[str] = set()
    for module in _modules(package):
        provider = getattr(module, "Provider", None)
        for attribute in attributes:
            values = getattr(provider, attribute, None)
            if values is None:
                continue
            if isinstance(values, dict):
                values = list(values)
            try:
                out.update(v.strip() for v in values if isinstance(v, str) and _LATIN_WORD.match(v.strip()))
            except TypeError:
                continue
    return out


@cache
def common_words() -> frozenset[str]:
    """Everyday English words (case-folded) that a capitalised name or place must not be mistaken for."""
    return frozenset(w.casefold() for w in (*faker.providers.lorem.en_US.Provider.word_list, *ENGLISH_STOP_WORDS))


# A word seen at least this often in pyspellchecker's English frequency list (subtitles and web text) is an
# everyday word: "Battery" or "Wisdom" capitalised is more likely a title than an unknown surname. Common
# surnames that are also rare words ("Becker": 94, "Garcia": 532) stay below it.
ENGLISH_WORD_COUNT = 1000


@cache
def english_vocabulary() -> frozenset[str]:
    """Everyday English words (case-folded), from the word-frequency list that ships with pyspellchecker."""
    path = Path(spellchecker.__file__).parent / "resources" / "en.json.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        counts = json.load(handle)
    return frozenset(w for w, n in counts.items() if n >= ENGLISH_WORD_COUNT and w.isalpha())


@cache
def first_names() -> frozenset[str]:
    return frozenset(
        n.casefold()
        for n in _strings(faker.providers.person, "first_names", "first_names_male", "first_names_female")
        if len(n) > 1
    )


@cache
def last_names() -> frozenset[str]:
    return frozenset(n.casefold() for n in _strings(faker.providers.person, "last_names") if len(n) > 1)


@cache
def places() -> frozenset[str]:
    """Cities, countries, states and regions from Faker's locales (case-folded, at least three letters)."""
    raw = _strings(faker.providers.address, "cities", "city_names", "countries", "states", "provinces", "regions")
    return frozenset(p.casefold() for p in raw if len(p) >= 3)


@cache
def world_places() -> frozenset[str]:
    """The English place names of libphonenumber's geocoding data: about 40,000 cities and regions of the world
    ("Paris", "Miami", "Jodhpur"). Many are also surnames or words, so they are used where a place is expected."""
    raw: set[str] = set()
    for entry in GEOCODE_DATA.values():
        name = entry.get("en")
        if name:
            raw.update(part.strip() for part in _PLACE_PARTS.split(name) if _LATIN_WORD.match(part.strip()))
    return frozenset(p.casefold() for p in raw if len(p) >= 3)


@cache
def countries() -> frozenset[str]:
    return frozenset(p.casefold() for p in _strings(faker.providers.address, "countries") if len(p) >= 3)


@cache
def street_words() -> frozenset[str]:
    """Street types and street-name stems ("Avenue", "utca", "vej", "Skogstien")."""
    raw = _strings(faker.providers.address, "street_suffixes", "street_prefixes", "street_names", "streets")
    return frozenset(p.casefold() for p in raw if len(p) >= 2)


@cache
def jobs() -> frozenset[str]:
    """Job titles from Faker's English-speaking locales."""
    out: set[str] = set()
    for module in _modules(faker.providers.job):
        if module.__name__.rsplit(".", 1)[-1].startswith("en"):
            out.update(j.strip() for j in getattr(module.Provider, "jobs", ()) if isinstance(j, str))
    out.update(j for j in getattr(faker.providers.job.Provider, "jobs", ()) if isinstance(j, str))
    # Faker writes "Engineer, civil": the natural order is what appears in text.
    natural = {" ".join(reversed(j.split(", ", 1))) if ", " in j else j for j in out}
    return frozenset(j.casefold() for j in natural if len(j) > 3)


@cache
def nrp_terms() -> frozenset[str]:
    return frozenset((*NRP_TERMS, *_NRP_PHRASES))
