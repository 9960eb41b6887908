//! The five prompt families. Each is a fixed set of grammatical templates over fixed lexicons;
//! the tables below are part of the specification (docs/CHALLENGES.md): changing any entry or the
//! order of draws changes every prompt, so bump `GENERATOR_VERSION` when you do.

use crate::draws::Draws;

/// Version of the prompt generator; part of every commitment.
pub const GENERATOR_VERSION: &str = "pot-prompts/v1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// Encyclopedic prose about invented towns.
    Factual,
    /// An arithmetic word problem solved step by step, with correct numbers.
    Reasoning,
    /// A short function in Python, Rust or JavaScript.
    Code,
    /// A customer-service dialogue.
    Dialogue,
    /// French prose.
    French,
}

impl Family {
    /// All families in their canonical order (the order draws index into).
    pub const ALL: [Family; 5] = [
        Family::Factual,
        Family::Reasoning,
        Family::Code,
        Family::Dialogue,
        Family::French,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Factual => "factual",
            Family::Reasoning => "reasoning",
            Family::Code => "code",
            Family::Dialogue => "dialogue",
            Family::French => "french",
        }
    }

    pub fn from_name(name: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.name() == name)
    }

    pub(crate) fn generate(self, d: &mut Draws) -> String {
        match self {
            Family::Factual => factual(d),
            Family::Reasoning => reasoning(d),
            Family::Code => code(d),
            Family::Dialogue => dialogue(d),
            Family::French => french(d),
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

// ---------------------------------------------------------------------------------------------
// Factual prose

const NAME_HEADS: &[&str] = &[
    "Ash", "Bran", "Cald", "Dun", "Elm", "Fern", "Glen", "Hart", "Iver", "Kel", "Lang", "Mar",
    "Nor", "Oak", "Pem", "Rad", "Sel", "Thorn", "Wick", "Yar",
];
const NAME_TAILS: &[&str] = &[
    "ford", "bury", "wick", "stead", "mouth", "combe", "haven", "ley", "by", "thorpe", "minster",
    "field", "brook", "gate", "holm", "dale", "wood", "port", "mere", "ton",
];
const REGIONS: &[&str] = &[
    "the Velmar Valley",
    "the Oster Hills",
    "the Saltmarsh Coast",
    "the High Carran Plateau",
    "the Lowen Fens",
    "the Brisk Peninsula",
    "the Amber Downs",
    "the Tarrow Basin",
    "the Greywater Estuary",
    "the Northern Reach",
    "the Solent Moors",
    "the Kestrel Highlands",
    "the Willow Delta",
    "the Copper Ridge",
    "the Fallow Plains",
    "the Hollin Forest",
];
const SETTLEMENTS: &[&str] = &["town", "village", "port city", "market town", "river town"];
const SIZE_ADJS: &[&str] = &[
    "small",
    "quiet",
    "busy",
    "historic",
    "remote",
    "prosperous",
    "growing",
    "picturesque",
];
const POSITIONS: &[&str] = &[
    "northern edge",
    "southern edge",
    "eastern shore",
    "western shore",
    "central lowlands",
    "upper slopes",
    "lower banks",
    "far corner",
];
const FOUNDERS: &[&str] = &[
    "a group of wool merchants",
    "fishing families from the coast",
    "monks from a nearby abbey",
    "miners searching for tin",
    "settlers fleeing a long drought",
    "a company of salt traders",
    "farmers who drained the marshes",
    "veterans of a border war",
];
const FOUNDING_REASONS: &[&str] = &[
    "wanted a safe harbour for the winter",
    "needed fresh water for their herds",
    "were looking for fertile land",
    "hoped to control the old trade road",
    "built a mill beside the fast stream",
    "found clay suitable for pottery",
];
const INDUSTRIES: &[&str] = &[
    "fishing",
    "weaving",
    "tourism",
    "dairy farming",
    "shipbuilding",
    "apple growing",
    "stone quarrying",
    "glassmaking",
    "printing",
    "timber",
    "brewing",
    "software services",
];
const TRENDS: &[&str] = &[
    "grown steadily",
    "fallen slowly",
    "remained stable",
    "nearly doubled",
];
const LANDMARKS: &[&str] = &[
    "clock tower",
    "stone bridge",
    "covered market",
    "lighthouse",
    "town hall",
    "old library",
    "railway station",
    "cathedral",
    "observatory",
    "botanical garden",
];
const ATTRACTIONS: &[&str] = &[
    "spring blossom in the orchards",
    "migrating geese on the mudflats",
    "autumn colours along the river",
    "summer regatta in the harbour",
    "frozen waterfalls above the town",
    "lantern parade through the old streets",
];
const SEASONS: &[&str] = &[
    "spring",
    "summer",
    "autumn",
    "winter",
    "late summer",
    "early spring",
];
const SUBJECTS: &[&str] = &[
    "local history",
    "navigation",
    "carpentry",
    "botany",
    "music",
    "mathematics",
    "astronomy",
    "cooking",
    "geology",
    "poetry",
];
const FESTIVALS: &[&str] = &[
    "harvest fair",
    "music festival",
    "boat race",
    "cheese market",
    "kite festival",
    "book fair",
    "winter carnival",
];

fn place_name(d: &mut Draws) -> String {
    format!("{}{}", d.pick(NAME_HEADS), d.pick(NAME_TAILS))
}

fn factual(d: &mut Draws) -> String {
    let place = place_name(d);
    let settlement = d.pick(SETTLEMENTS);
    let region = d.pick(REGIONS);
    let mut sentences = vec![format!(
        "{place} is a {} {settlement} on the {} of {region}.",
        d.pick(SIZE_ADJS),
        d.pick(POSITIONS),
    )];
    for choice in d.distinct(5, 3) {
        sentences.push(match choice {
            0 => format!(
                "It was founded in {} by {}, who {}.",
                d.between(1120, 1890),
                d.pick(FOUNDERS),
                d.pick(FOUNDING_REASONS)
            ),
            1 => format!(
                "Its economy depends on {} and {}, and its population has {} since {}.",
                d.pick(INDUSTRIES),
                d.pick(INDUSTRIES),
                d.pick(TRENDS),
                d.between(1950, 2015)
            ),
            2 => format!(
                "The {}, completed in {}, is the best-known building in the {settlement}.",
                d.pick(LANDMARKS),
                d.between(1600, 1990)
            ),
            3 => format!(
                "Visitors often arrive in {} to see the {}.",
                d.pick(SEASONS),
                d.pick(ATTRACTIONS)
            ),
            _ => format!(
                "Local schools teach {} alongside {}, and the annual {} draws crowds from across {region}.",
                d.pick(SUBJECTS),
                d.pick(SUBJECTS),
                d.pick(FESTIVALS)
            ),
        });
    }
    sentences.join(" ")
}

// ---------------------------------------------------------------------------------------------
// Step-by-step reasoning

/// (name, subject pronoun)
const PEOPLE: &[(&str, &str)] = &[
    ("Amara", "She"),
    ("Bruno", "He"),
    ("Chen", "He"),
    ("Dalia", "She"),
    ("Emeka", "He"),
    ("Farah", "She"),
    ("Goran", "He"),
    ("Hana", "She"),
    ("Ivan", "He"),
    ("Julia", "She"),
    ("Kofi", "He"),
    ("Leila", "She"),
    ("Mateo", "He"),
    ("Nadia", "She"),
    ("Oskar", "He"),
    ("Priya", "She"),
    ("Quentin", "He"),
    ("Rosa", "She"),
    ("Sami", "He"),
    ("Tara", "She"),
];
/// (container plural, item plural)
const STOCK: &[(&str, &str)] = &[
    ("boxes", "pencils"),
    ("crates", "apples"),
    ("trays", "muffins"),
    ("bags", "marbles"),
    ("shelves", "books"),
    ("baskets", "eggs"),
    ("jars", "cookies"),
    ("packs", "stickers"),
    ("cartons", "oranges"),
    ("bins", "bolts"),
    ("folders", "letters"),
    ("racks", "bottles"),
];
/// (vehicle, lowest and highest plausible speed in km/h)
const VEHICLES: &[(&str, u64, u64)] = &[
    ("train", 60, 160),
    ("ferry", 15, 45),
    ("bus", 30, 90),
    ("cyclist", 12, 30),
    ("delivery van", 40, 100),
    ("runner", 8, 16),
];

fn reasoning(d: &mut Draws) -> String {
    let (name, pronoun) = d.pick(PEOPLE);
    match d.below(3) {
        0 => {
            let (containers, items) = d.pick(STOCK);
            let a = d.between(2, 12);
            let b = d.between(2, 12);
            let total = a * b;
            let given = d.between(2, total - 1);
            let bought = d.between(2, 20);
            let left = total - given;
            format!(
                "{name} has {a} {containers} with {b} {items} in each. {pronoun} gives away \
                 {given} {items} and then buys {bought} more. How many {items} does {name} have \
                 now? Let us think step by step. First, {a} {containers} of {b} {items} hold \
                 {a} x {b} = {total} {items}. After giving away {given}, {name} has {total} - \
                 {given} = {left}. After buying {bought} more, the total is {left} + {bought} = {}. \
                 The answer is {}.",
                left + bought,
                left + bought
            )
        }
        1 => {
            let (vehicle, slowest, fastest) = d.pick(VEHICLES);
            let origin = place_name(d);
            let speed = d.between(slowest, fastest);
            let hours = d.between(2, 9);
            let extra = d.between(2, 40);
            let first = speed * hours;
            format!(
                "{name} watches a {vehicle} leave {origin}. It travels at {speed} kilometres per hour for \
                 {hours} hours and then covers another {extra} kilometres. How far does it go in \
                 total? Let us reason step by step. Distance equals speed times time, so the first \
                 part is {speed} x {hours} = {first} kilometres. Adding the last {extra} kilometres \
                 gives {first} + {extra} = {} kilometres. The answer is {} kilometres.",
                first + extra,
                first + extra
            )
        }
        _ => {
            let (_, items) = d.pick(STOCK);
            let home = place_name(d);
            let friends = d.between(2, 12);
            let each = d.between(2, 25);
            let spare = d.between(0, friends - 1);
            let total = friends * each + spare;
            format!(
                "Back home in {home}, {name} shares {total} {items} equally among {friends} friends and keeps whatever \
                 is left over. How many {items} does each friend get, and how many does {name} \
                 keep? Let us work it out step by step. Dividing {total} by {friends} gives \
                 {each} with a remainder of {spare}, because {friends} x {each} = {} and {total} - \
                 {} = {spare}. Each friend gets {each} {items}, and {name} keeps {spare}.",
                friends * each,
                friends * each
            )
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Source code

/// (entity singular, entity plural, numeric fields)
const ENTITIES: &[(&str, &str, &[&str])] = &[
    (
        "order",
        "orders",
        &["total", "quantity", "discount", "weight"],
    ),
    (
        "sensor",
        "sensors",
        &["reading", "temperature", "voltage", "uptime"],
    ),
    (
        "invoice",
        "invoices",
        &["amount", "tax", "days_overdue", "line_count"],
    ),
    ("player", "players", &["score", "level", "health", "streak"]),
    (
        "ticket",
        "tickets",
        &["priority", "age_hours", "reopen_count", "votes"],
    ),
    ("book", "books", &["pages", "rating", "year", "copies"]),
    (
        "server",
        "servers",
        &["load", "memory_mb", "latency_ms", "errors"],
    ),
    (
        "flight",
        "flights",
        &["delay", "seats_free", "distance", "fare"],
    ),
];
const CODE_VERBS: &[&str] = &[
    "collect",
    "select",
    "gather",
    "extract",
    "summarize",
    "measure",
    "aggregate",
    "scan",
    "tally",
    "compute",
    "reduce",
    "inspect",
];
const THRESHOLD_NAMES: &[&str] = &[
    "threshold",
    "minimum",
    "cutoff",
    "limit",
    "floor",
    "bound",
    "lower_bound",
    "min_value",
];

fn code(d: &mut Draws) -> String {
    let (one, many, fields) = d.pick(ENTITIES);
    let verb = d.pick(CODE_VERBS);
    let field_pair = d.distinct(fields.len(), 2);
    let (test_field, value_field) = (fields[field_pair[0]], fields[field_pair[1]]);
    let limit = d.pick(THRESHOLD_NAMES);
    let default_limit = d.between(1, 2000);
    let op = d.below(3);
    let func = format!("{verb}_{value_field}_by_{test_field}");
    match d.below(3) {
        0 => {
            let (init, update, ret) = match op {
                0 => (
                    "total = 0",
                    format!("total += {one}.{value_field}"),
                    "total",
                ),
                1 => ("count = 0", "count += 1".to_string(), "count"),
                _ => (
                    "best = None",
                    format!(
                        "best = {one}.{value_field} if best is None else max(best, {one}.{value_field})"
                    ),
                    "best",
                ),
            };
            format!(
                "def {func}({many}, {limit}={default_limit}):\n    \"\"\"Look at every {one} whose \
                 {test_field} is above {limit} and combine its {value_field}.\"\"\"\n    {init}\n    \
                 for {one} in {many}:\n        if {one}.{test_field} > {limit}:\n            \
                 {update}\n    return {ret}\n"
            )
        }
        1 => {
            let ty = capitalise(one);
            let (init, update, ret) = match op {
                0 => (
                    "let mut total = 0.0;",
                    format!("total += {one}.{value_field};"),
                    "total",
                ),
                1 => ("let mut count = 0.0;", "count += 1.0;".to_string(), "count"),
                _ => (
                    "let mut best = f64::MIN;",
                    format!("best = best.max({one}.{value_field});"),
                    "best",
                ),
            };
            format!(
                "/// Looks at every {one} whose {test_field} is above `{limit}` and combines its \
                 {value_field}.\n/// Callers usually pass `{limit} = {default_limit}.0`.\nfn {func}({many}: &[{ty}], {limit}: f64) -> f64 {{\n    {init}\n    \
                 for {one} in {many} {{\n        if {one}.{test_field} > {limit} {{\n            \
                 {update}\n        }}\n    }}\n    {ret}\n}}\n"
            )
        }
        _ => {
            let camel = camel_case(&func);
            let reducer = match op {
                0 => format!(".reduce((sum, {one}) => sum + {one}.{value_field}, 0)"),
                1 => ".length".to_string(),
                _ => format!(
                    ".reduce((best, {one}) => Math.max(best, {one}.{value_field}), -Infinity)"
                ),
            };
            format!(
                "// Looks at every {one} whose {test_field} is above {limit} and combines its \
                 {value_field}.\nfunction {camel}({many}, {limit} = {default_limit}) {{\n  return \
                 {many}\n    .filter(({one}) => {one}.{test_field} > {limit})\n    {reducer};\n}}\n"
            )
        }
    }
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn camel_case(snake: &str) -> String {
    let mut parts = snake.split('_');
    let head = parts.next().unwrap_or_default().to_string();
    parts.fold(head, |acc, part| acc + &capitalise(part))
}

// ---------------------------------------------------------------------------------------------
// Dialogue

const PRODUCTS: &[&str] = &[
    "kettle",
    "pair of hiking boots",
    "desk lamp",
    "coffee grinder",
    "backpack",
    "bicycle helmet",
    "set of kitchen knives",
    "wireless keyboard",
    "winter coat",
    "garden hose",
];
const PROBLEMS: &[&str] = &[
    "with a scratch on the front",
    "in the wrong colour",
    "two weeks late",
    "without the instructions",
    "with a missing part",
    "in a damaged box",
];
const DAYS: &[&str] = &[
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "weekend",
];
const REMEDIES: &[&str] = &[
    "send a replacement today",
    "arrange a full refund",
    "book a courier to collect it",
    "send the missing part by express post",
    "apply a discount to your next order",
];
const CLOSINGS: &[&str] = &[
    "That sounds fair. Thank you for your help.",
    "Great, I appreciate how quickly you sorted this out.",
    "Thanks. Could you also email me a confirmation?",
    "Perfect. I will keep an eye on my inbox.",
];

fn dialogue(d: &mut Draws) -> String {
    let product = d.pick(PRODUCTS);
    let problem = d.pick(PROBLEMS);
    let day = d.pick(DAYS);
    let order = d.between(100_000, 999_999);
    let remedy = d.pick(REMEDIES);
    let days = d.between(2, 7);
    let closing = d.pick(CLOSINGS);
    let (agent, _) = d.pick(PEOPLE);
    format!(
        "Customer: Hello, I ordered a {product} last {day}, but it arrived {problem}.\n\
         Agent: I am sorry to hear that. My name is {agent}. Could you give me your order number?\n\
         Customer: Of course, it is {order}.\n\
         Agent: Thank you. I can see the order now. I will {remedy}, and you should hear from us \
         within {days} days.\n\
         Customer: {closing}"
    )
}

// ---------------------------------------------------------------------------------------------
// French

const VILLES: &[&str] = &[
    "Valmont",
    "Beaulieu",
    "Rochefort",
    "Saint-Aubin",
    "Montclair",
    "Villeneuve",
    "Clairvaux",
    "Fontenay",
    "Belleroche",
    "Castelnau",
    "Mirebeau",
    "Lormont",
];
const REGIONS_FR: &[&str] = &[
    "au bord de la mer",
    "au pied des montagnes",
    "au cœur d'une vallée fertile",
    "près d'un grand lac",
    "le long d'un fleuve tranquille",
    "sur un plateau venteux",
];
const LIEUX: &[&str] = &[
    "au marché couvert",
    "à la bibliothèque municipale",
    "sur la place de l'église",
    "au café du port",
    "dans le jardin public",
    "à la salle des fêtes",
];
const ACTIVITES: &[&str] = &[
    "discuter des nouvelles du quartier",
    "acheter des légumes frais",
    "écouter un concert",
    "jouer aux échecs",
    "préparer la fête du village",
    "échanger des livres",
];
const MOMENTS: &[&str] = &[
    "Chaque samedi matin",
    "Le dimanche après-midi",
    "Tous les soirs d'été",
    "Au début de chaque mois",
    "Pendant les vacances d'hiver",
];
const METIERS: &[&str] = &[
    "les pêcheurs",
    "les boulangers",
    "les artisans",
    "les étudiants",
    "les vignerons",
    "les musiciens",
];
const PROJETS: &[&str] = &[
    "rénover le vieux pont",
    "ouvrir une nouvelle école",
    "planter des arbres le long des rues",
    "restaurer le moulin",
    "construire une piste cyclable",
];

fn french(d: &mut Draws) -> String {
    let ville = d.pick(VILLES);
    let mut phrases = vec![format!(
        "La commune de {ville} se trouve {}, à {} kilomètres de la capitale régionale.",
        d.pick(REGIONS_FR),
        d.between(5, 180)
    )];
    for choice in d.distinct(4, 3) {
        phrases.push(match choice {
            0 => format!(
                "{}, les habitants se retrouvent {} pour {}.",
                d.pick(MOMENTS),
                d.pick(LIEUX),
                d.pick(ACTIVITES)
            ),
            1 => format!(
                "Depuis {}, {} de la région vendent leurs produits dans les rues du centre.",
                d.between(1900, 2020),
                d.pick(METIERS)
            ),
            2 => format!(
                "Le conseil municipal a voté un budget de {} euros pour {}.",
                d.between(2, 90) * 10_000,
                d.pick(PROJETS)
            ),
            _ => format!(
                "Selon le dernier recensement, la ville compte environ {} habitants, dont beaucoup \
                 travaillent dans les villages voisins.",
                d.between(8, 95) * 100
            ),
        });
    }
    phrases.join(" ")
}
