"""Manual-like distractor text for the growth benchmark: what a store fills up with over the years.

Owners' manuals, care guides and troubleshooting pages, one paragraph per chunk, generated per
category from templates and a small vocabulary (`VOCAB`), deterministically from a seed. They
talk about the same kinds of things as the house notes (filters, pumps, error codes, intervals,
warranties) in generic manual language, and never about this household: no dates of visits, no
prices paid, no people, no vendors. A paragraph that contains a QA keyword is drawn again, so no
distractor can answer a QA question.

`distractors(n, seed)` is prefix-stable: the first 1,000 of 10,000 are the 1,000 of a smaller run,
which lets the benchmark grow one store and cache the embeddings once.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

GENERATOR_VERSION = 1  # bump when templates or vocabulary change (the embedding cache is keyed on it)


@dataclass(frozen=True)
class Vocab:
    """What a category's manuals talk about."""

    items: tuple[str, ...]  # the equipment or surface the manual is for
    parts: tuple[str, ...]
    tasks: tuple[str, ...]  # verb phrases: "<task> the <part>"
    symptoms: tuple[str, ...]
    causes: tuple[str, ...]
    specs: tuple[str, ...]  # "<spec>: <value>" lines of a specification table
    tools: tuple[str, ...]


VOCAB: dict[str, Vocab] = {
    "appliances": Vocab(
        (
            "front-loading washer",
            "dishwasher",
            "fridge-freezer",
            "tumble dryer",
            "microwave",
            "robot vacuum",
            "dehumidifier",
        ),
        (
            "door gasket",
            "drain filter",
            "spray arm",
            "lint screen",
            "water inlet valve",
            "defrost heater",
            "condenser coil",
            "drive belt",
        ),
        ("wipe down", "remove and rinse", "inspect", "descale", "level", "reseat"),
        (
            "the cycle stops mid-way",
            "water pools under the door",
            "the display flashes a fault code",
            "the drum will not turn",
            "frost builds up on the back wall",
        ),
        (
            "a blocked drain hose",
            "a worn door seal",
            "an unbalanced load",
            "a failed thermistor",
            "a kinked inlet hose",
        ),
        ("rated power", "spin speed", "noise level", "energy class", "capacity"),
        ("a soft cloth", "a flat screwdriver", "a shallow tray", "a bubble level"),
    ),
    "brickwork": Vocab(
        ("brick garden wall", "chimney stack", "stone retaining wall", "brick patio", "concrete front steps"),
        ("mortar joints", "coping stones", "weep holes", "expansion joint", "damp-proof course", "chimney crown"),
        ("rake out", "repoint", "brush off", "seal", "inspect", "reset"),
        (
            "white powder appears on the face",
            "mortar crumbles when scratched",
            "a brick face spalls after frost",
            "the wall leans outward",
            "water seeps through after rain",
        ),
        (
            "trapped moisture",
            "frost damage",
            "a mortar mix that is too strong",
            "blocked weep holes",
            "settlement of the footing",
        ),
        ("mortar mix ratio", "joint depth", "curing time", "minimum laying temperature"),
        ("a plugging chisel", "a pointing trowel", "a stiff brush", "a spirit level"),
    ),
    "car": Vocab(
        ("family hatchback", "electric crossover", "estate car", "plug-in hybrid"),
        (
            "tyres",
            "wiper blades",
            "brake pads",
            "cabin air filter",
            "12 V battery",
            "charging cable",
            "coolant reservoir",
        ),
        ("check", "top up", "replace", "rotate", "inspect", "clean"),
        (
            "a warning light comes on at start-up",
            "the steering pulls to one side",
            "the car will not start on cold mornings",
            "charging stops after a few minutes",
            "the brakes squeal",
        ),
        (
            "low tyre pressure",
            "a weak 12 V battery",
            "worn brake pads",
            "a loose cable connector",
            "a tripped charge point",
        ),
        ("tyre pressure", "service interval", "towing capacity", "charge rate"),
        ("a tyre gauge", "a torque wrench", "a jump starter", "a microfibre cloth"),
    ),
    "cleaning": Vocab(
        ("wool carpet", "fabric sofa", "tiled shower", "oven interior", "hardwood table", "glass shower screen"),
        ("grout lines", "upholstery fabric", "oven racks", "carpet pile", "extractor filter", "seal edges"),
        ("vacuum", "spot-clean", "soak", "blot", "rinse", "buff"),
        (
            "a stain spreads when wet",
            "grout turns dark",
            "a film stays on the glass",
            "a sour smell lingers",
            "the colour lifts onto the cloth",
        ),
        (
            "too much detergent",
            "hard water residue",
            "mould in the joints",
            "rubbing instead of blotting",
            "a cleaner that is too strong",
        ),
        ("dilution ratio", "contact time", "water temperature", "drying time"),
        ("a soft brush", "a spray bottle", "white cloths", "a squeegee"),
    ),
    "cooking": Vocab(
        ("cast-iron pan", "stand mixer", "pressure cooker", "sourdough starter", "bread machine", "chef's knife"),
        ("sealing ring", "dough hook", "steam valve", "non-stick coating", "blade edge", "lid gasket"),
        ("season", "sharpen", "hand-wash", "oil lightly", "feed", "store"),
        (
            "food sticks to the surface",
            "the dough does not rise",
            "the lid will not lock",
            "the blade tears tomatoes",
            "the crust burns before the middle sets",
        ),
        ("too little fat in the pan", "a cold kitchen", "a worn sealing ring", "a dull edge", "an oven that runs hot"),
        ("bowl capacity", "operating pressure", "oven temperature", "proofing time"),
        ("a honing steel", "a pastry brush", "a kitchen scale", "an oven thermometer"),
    ),
    "electrical": Vocab(
        (
            "consumer unit",
            "outdoor socket",
            "RCD-protected circuit",
            "smart light switch",
            "surge protector",
            "extractor fan circuit",
        ),
        ("circuit breakers", "RCD test button", "socket faceplate", "junction box", "earth connection", "cable clips"),
        ("test", "label", "tighten", "reset", "isolate", "inspect"),
        (
            "a breaker trips when two appliances run",
            "lights flicker",
            "a socket feels warm",
            "the RCD trips in wet weather",
            "a switch buzzes",
        ),
        (
            "an overloaded circuit",
            "a loose terminal",
            "moisture in an outdoor box",
            "a failing appliance element",
            "a worn switch contact",
        ),
        ("breaker rating", "cable size", "trip current", "maximum load"),
        ("a voltage tester", "an insulated screwdriver", "a socket tester", "cable ties"),
    ),
    "flooring": Vocab(
        ("oak floorboards", "laminate floor", "vinyl plank floor", "ceramic floor tiles", "stair carpet"),
        ("underlay", "expansion gap", "skirting board", "floor varnish", "tile grout", "threshold strip"),
        ("sand", "refinish", "wax", "sweep", "regrout", "replace"),
        (
            "boards cup across the width",
            "a plank lifts at the seam",
            "the finish looks dull in traffic lanes",
            "a tile sounds hollow",
            "gaps open in winter",
        ),
        ("high humidity", "a missing expansion gap", "grit under shoes", "poor adhesive coverage", "dry winter air"),
        ("wear layer thickness", "acclimatisation time", "expansion gap width", "recoat interval"),
        ("a floor scraper", "a pull bar", "a rubber mallet", "felt pads"),
    ),
    "fountain": Vocab(
        ("garden fountain", "wall-mounted water feature", "bird bath bubbler", "pond fountain", "solar fountain"),
        ("submersible pump", "intake sponge", "nozzle head", "reservoir basin", "tubing", "float valve"),
        ("clean", "flush", "drain", "refill", "descale", "winterise"),
        (
            "the spray weakens",
            "the pump hums but no water flows",
            "green algae coats the basin",
            "water level drops quickly",
            "the fountain stops in shade",
        ),
        (
            "a clogged intake sponge",
            "an air lock in the pump",
            "too much sunlight on standing water",
            "splash loss in the wind",
            "a dirty solar panel",
        ),
        ("pump flow rate", "maximum head height", "cable length", "basin volume"),
        ("a soft brush", "a bucket", "white vinegar", "a hose"),
    ),
    "garden": Vocab(
        ("lawn", "hedge", "vegetable bed", "fruit tree", "rose border", "lawn mower", "irrigation timer"),
        ("mower blade", "drip emitters", "grass box", "hedge trimmer blade", "compost bin", "soaker hose"),
        ("prune", "mulch", "aerate", "feed", "sharpen", "water deeply"),
        (
            "leaves turn yellow",
            "brown patches spread across the lawn",
            "the mower leaves ragged tips",
            "fruit drops early",
            "emitters stop dripping",
        ),
        ("overwatering", "compacted soil", "a dull blade", "late frost", "a blocked emitter"),
        ("cutting height", "watering depth", "spacing between plants", "feed rate"),
        ("secateurs", "a garden fork", "a rake", "a watering can"),
    ),
    "gutters": Vocab(
        ("half-round gutter", "box gutter", "downpipe", "gutter guard", "rain water butt"),
        ("gutter brackets", "outlet", "joint seals", "downpipe shoe", "leaf guard mesh", "end stop"),
        ("clear", "flush", "reseal", "realign", "inspect", "tighten"),
        (
            "water spills over the front edge",
            "a joint drips",
            "the gutter sags between brackets",
            "the downpipe gurgles",
            "a stain runs down the wall",
        ),
        (
            "leaves in the outlet",
            "a failed joint seal",
            "a bracket that worked loose",
            "a blocked downpipe bend",
            "too shallow a fall",
        ),
        ("gutter fall", "bracket spacing", "outlet size", "flow capacity"),
        ("a gutter scoop", "a ladder stand-off", "a hose", "a plumb line"),
    ),
    "hvac": Vocab(
        (
            "gas furnace",
            "heat pump",
            "central air conditioner",
            "ducted air handler",
            "mini-split unit",
            "programmable thermostat",
        ),
        ("air filter", "condensate drain", "outdoor coil", "blower motor", "flame sensor", "supply registers"),
        ("replace", "vacuum", "clear", "inspect", "recalibrate", "straighten"),
        (
            "the system short-cycles",
            "rooms far from the unit stay cold",
            "the indoor unit drips",
            "the furnace locks out after three tries",
            "the fan runs but no heat comes",
        ),
        (
            "a clogged air filter",
            "a dirty flame sensor",
            "a blocked condensate line",
            "closed registers",
            "low refrigerant",
        ),
        ("filter size", "heating output", "seasonal efficiency", "airflow"),
        ("a fin comb", "a wet-dry vacuum", "fine steel wool", "a flashlight"),
    ),
    "internet": Vocab(
        (
            "wireless router",
            "mesh access point",
            "network switch",
            "fibre modem",
            "smart home hub",
            "powerline adapter",
        ),
        ("firmware", "Wi-Fi channel", "ethernet cable", "guest network", "power adapter", "status lights"),
        ("restart", "update", "reposition", "reset", "label", "test"),
        (
            "the connection drops every evening",
            "speeds fall in the upstairs rooms",
            "devices cannot join the network",
            "the status light blinks orange",
            "video calls freeze",
        ),
        (
            "a crowded Wi-Fi channel",
            "outdated firmware",
            "a loose ethernet cable",
            "thick walls between rooms",
            "an IP address conflict",
        ),
        ("wireless standard", "maximum throughput", "ports", "coverage area"),
        ("a network cable tester", "a paperclip for the reset button", "a speed test app", "cable labels"),
    ),
    "painting": Vocab(
        ("interior wall", "exterior weatherboard", "window frames", "ceiling", "garden fence", "front door"),
        ("primer coat", "top coat", "masking tape", "filler", "caulk line", "paint brushes"),
        ("sand", "prime", "fill", "cut in", "recoat", "clean"),
        (
            "the paint peels in strips",
            "brush marks show in the finish",
            "stains bleed through",
            "the colour looks patchy",
            "cracks form along the trim",
        ),
        (
            "painting over a damp surface",
            "skipping the primer",
            "paint applied too thick",
            "a glossy surface left unsanded",
            "old caulk that shrank",
        ),
        ("coverage per litre", "recoat time", "sheen level", "drying temperature"),
        ("a sanding block", "a roller tray", "a caulking gun", "dust sheets"),
    ),
    "pest_control": Vocab(
        ("mouse bait station", "ant trap", "wasp nest", "moth trap", "rodent-proof vent", "slug barrier"),
        ("bait block", "entry gaps", "door sweeps", "pheromone lure", "mesh screen", "sticky board"),
        ("seal", "inspect", "refresh", "set", "check", "clear away"),
        (
            "droppings appear along the skirting",
            "ants trail to the kitchen",
            "wasps gather under the eaves",
            "holes appear in wool clothes",
            "scratching is heard in the loft",
        ),
        (
            "gaps around pipes",
            "food left uncovered",
            "a nest in the soffit",
            "stored clothes left undisturbed",
            "an open air brick",
        ),
        ("bait refresh interval", "trap coverage", "lure life", "mesh gauge"),
        ("steel wool", "a sealant gun", "gloves", "a torch"),
    ),
    "plumbing": Vocab(
        ("kitchen sink", "toilet cistern", "shower valve", "outdoor tap", "washing machine valve", "main stop valve"),
        ("tap washer", "fill valve", "P-trap", "flexible hose", "cartridge", "isolation valve"),
        ("tighten", "replace", "clear", "flush", "insulate", "inspect"),
        (
            "the tap drips",
            "the toilet keeps running",
            "the sink drains slowly",
            "water pressure drops",
            "a pipe knocks when a tap closes",
        ),
        ("a worn washer", "a sticking fill valve", "grease in the trap", "a partly closed valve", "water hammer"),
        ("pipe diameter", "flow rate", "thread size", "working pressure"),
        ("an adjustable wrench", "a plunger", "PTFE tape", "a bucket"),
    ),
    "pool": Vocab(
        ("pool pump", "sand filter", "pool heater", "hot tub", "salt chlorinator", "pool cover"),
        ("skimmer basket", "pump strainer", "filter sand", "heat exchanger", "chlorinator cell", "return jets"),
        ("backwash", "empty", "shock", "balance", "inspect", "brush"),
        (
            "the water turns cloudy",
            "the pump loses prime",
            "the heater shows a flow fault",
            "the spa foams",
            "the cover sags with water",
        ),
        ("low chlorine", "an air leak at the pump lid", "a dirty filter", "body oils in the water", "low water level"),
        ("filter pressure", "heater output", "pump flow", "pH range"),
        ("a test kit", "a telescopic pole", "a leaf net", "a pool brush"),
    ),
    "roof": Vocab(
        ("slate roof", "asphalt shingle roof", "flat felt roof", "roof valley", "ridge line", "skylight"),
        ("flashing", "ridge tiles", "underlayment", "roof vents", "shingles", "valley lining"),
        ("inspect", "replace", "reseal", "clear moss from", "refix", "check"),
        (
            "a damp patch appears on the ceiling",
            "shingles curl at the edges",
            "a slate slips",
            "daylight shows in the loft",
            "moss lifts the tiles",
        ),
        ("cracked flashing", "wind uplift", "a nail that rusted through", "moss holding water", "ageing underlayment"),
        ("roof pitch", "shingle exposure", "nail spacing", "wind rating"),
        ("a roofing ladder", "a slate ripper", "roofing sealant", "binoculars"),
    ),
    "security": Vocab(
        ("alarm panel", "video doorbell", "smart lock", "motion floodlight", "security camera", "door contact sensor"),
        ("backup battery", "keypad", "motion sensor", "siren", "recording storage", "entry code"),
        ("test", "replace", "reposition", "update", "arm", "clean"),
        (
            "the panel beeps every minute",
            "the camera goes offline at night",
            "the floodlight triggers on passing cars",
            "the lock drains batteries quickly",
            "a sensor reports open when shut",
        ),
        (
            "a low backup battery",
            "weak Wi-Fi at the door",
            "sensitivity set too high",
            "a misaligned strike plate",
            "a magnet that moved",
        ),
        ("battery life", "detection range", "storage period", "siren volume"),
        ("a step ladder", "a lens cloth", "spare batteries", "a small Phillips screwdriver"),
    ),
    "water_heater": Vocab(
        (
            "storage water heater",
            "tankless water heater",
            "hot water cylinder",
            "heat pump water heater",
            "immersion heater",
        ),
        ("anode rod", "drain valve", "pressure relief valve", "thermostat", "heating element", "flue"),
        ("flush", "test", "replace", "set", "drain", "inspect"),
        (
            "hot water runs out quickly",
            "the tank rumbles when heating",
            "the relief valve drips",
            "water smells of sulphur",
            "the pilot goes out",
        ),
        (
            "sediment on the tank floor",
            "a spent anode rod",
            "a thermostat set too high",
            "a failed element",
            "a dirty thermocouple",
        ),
        ("tank capacity", "recovery rate", "maximum temperature", "energy factor"),
        ("a garden hose", "a socket wrench", "a bucket", "a multimeter"),
    ),
    "windows_doors": Vocab(
        ("sash window", "double-glazed casement", "sliding patio door", "front door", "garage door", "roof window"),
        ("hinges", "weatherstripping", "door closer", "lock cylinder", "garage door springs", "sash cords"),
        ("lubricate", "adjust", "replace", "realign", "clean", "tighten"),
        (
            "the door sticks in damp weather",
            "condensation forms between the panes",
            "a draught comes in at the sill",
            "the garage door reverses before closing",
            "the lock turns stiffly",
        ),
        (
            "swollen timber",
            "a failed glazing seal",
            "worn weatherstripping",
            "a dirty safety sensor",
            "a dry lock mechanism",
        ),
        ("U-value", "glass thickness", "spring cycles", "opening width"),
        ("silicone spray", "a hex key", "a graphite lubricant", "a plane"),
    ),
}

INTERVALS = (
    "every month",
    "twice a year",
    "once a season",
    "every few weeks",
    "each spring",
    "before winter",
    "after heavy use",
)
KINDS = (
    "Maintenance",
    "Troubleshooting",
    "Care guide",
    "Specifications",
    "Safety",
    "Warranty terms",
    "Installation notes",
)

TEMPLATES: tuple[str, ...] = (
    "{Task} the {part} of the {item} {interval}. If {symptom}, the usual cause is {cause}; {task2} the {part2} and try again.",
    "When {symptom}, check for {cause} first. Most owners fix it by taking {tool} to the {part}; call a technician if it comes back.",
    "The manufacturer recommends that you {task} the {part} {interval} and {task2} the {part2} at least once a year.",
    "{Spec} and {spec2} are listed on the rating label of the {item}. Keep the label readable; a technician will ask for them.",
    "Before you {task} the {part}, switch the {item} off and let it settle. Use {tool}, never anything abrasive.",
    "Troubleshooting table for the {item}: {symptom} — {cause}. Remedy: {task} the {part}.",
    "Damage caused by {cause} is not covered by the limited warranty. Register the {item} and keep proof of routine care.",
    "A well-kept {item} runs for many years. Most early failures trace back to {cause}, which is why the {part} needs care {interval}.",
    "Tip: keep {tool} and a spare {part} near the {item}, so that when {symptom} you can act before it gets worse.",
    "Do not {task} the {part} while the {item} is running. {Symptom} is normal for a few minutes after a restart.",
    "Installers should leave access to the {part} and the {part2}; owners need to {task} them {interval}.",
    "Section {n}.{m}: {Task} the {part}. Tools needed: {tool}. Time: about {minutes} minutes.",
)


def _sentence_case(text: str) -> str:
    return text[:1].upper() + text[1:]


def paragraph(category: str, rng: random.Random) -> str:
    """One manual paragraph about `category`: a heading line and two to four template sentences."""
    v = VOCAB[category]
    item = rng.choice(v.items)
    sentences = []
    for template in rng.sample(TEMPLATES, rng.randint(2, 4)):
        task, task2 = rng.sample(v.tasks, 2)
        part, part2 = rng.sample(v.parts, 2)
        spec, spec2 = rng.sample(v.specs, 2)
        symptom = rng.choice(v.symptoms)
        values = {
            "item": item,
            "task": task,
            "Task": _sentence_case(task),
            "task2": task2,
            "part": part,
            "part2": part2,
            "symptom": symptom,
            "Symptom": _sentence_case(symptom),
            "cause": rng.choice(v.causes),
            "spec": spec,
            "Spec": _sentence_case(spec),
            "spec2": spec2,
            "tool": rng.choice(v.tools),
            "interval": rng.choice(INTERVALS),
            "n": rng.randint(2, 9),
            "m": rng.randint(1, 12),
            "minutes": rng.choice((10, 15, 20, 30, 45)),
        }
        sentences.append(template.format(**values))
    heading = f"## {rng.choice(KINDS)}: {item}"
    return heading + "\n\n" + " ".join(sentences)


def keyword_pattern(keywords: Iterable[str]) -> re.Pattern[str] | None:
    """A pattern matching any of `keywords` as a whole word (case-insensitive)."""
    words = sorted({k.strip() for k in keywords if k.strip()}, key=len, reverse=True)
    if not words:
        return None
    return re.compile(r"(?<!\w)(" + "|".join(re.escape(w) for w in words) + r")(?!\w)", re.IGNORECASE)


@dataclass(frozen=True)
class Distractor:
    """One distractor chunk: its note (several chunks share a manual) and category."""

    note_id: str
    category: str
    title: str
    text: str


def distractors(n: int, seed: int, keywords: Iterable[str] = (), per_note: int = 5) -> Iterator[Distractor]:
    """`n` distractor chunks, categories in turn, `per_note` paragraphs per manual; prefix-stable."""
    banned = keyword_pattern(keywords)
    categories = sorted(VOCAB)
    for i in range(n):
        note = i // per_note
        category = categories[note % len(categories)]
        rng = random.Random(f"{seed}:{i}")
        text = paragraph(category, rng)
        while banned is not None and banned.search(text):
            text = paragraph(category, rng)
        yield Distractor(
            f"zz-manual-{category}-{note:06d}", category, f"{category.replace('_', ' ')} manual {note}", text
        )
