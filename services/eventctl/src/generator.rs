//! `eventctl gen`: a seeded, deterministic generator of synthetic events for demos, tests and
//! benchmarks.
//!
//! Every line is one NDJSON event in the platform's envelope:
//! `{"data":{"id":..,"type":..,"attributes":{..}},"meta":{"created_at":<epoch ms>,"source":..}}`.
//!
//! - Nine business types (`product_viewed`, `product_liked`, `product_favorited`,
//!   `search_results_shown` (a results page: `product_ids`, 10 to 50 products),
//!   `product_contacted`, `conversation_started`, `product_listed`, `product_sold`,
//!   `user_created`) sit among the most frequent ranks; the remaining types are synthetic
//!   (`app_screen_opened_017`...), each with its own schema derived from the seed.
//! - Types are picked with a Zipf law (s = 1.1) over all types, users and products with a
//!   milder Zipf law over their id spaces; a product's owner, price and category are a pure
//!   function of its id, so the same product always has the same owner.
//! - `evolve` adds additive schema evolution during the run (fields that appear after some
//!   progress), rare conflicting value types, explicit nulls, empty containers, tricky strings
//!   (escapes, `\uXXXX`, emoji) and unknown extra keys, to exercise the lake's schema handling.
//! - `bad_ratio` mixes in invalid lines of known kinds, counted under the contract's reason
//!   codes in [`GenSummary::invalid_by_kind`].
//!
//! Lines are built in reused buffers and streamed to the writer in chunks (bounded memory).
//! The same options always give the same bytes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use rand_distr::{Distribution, Zipf};

/// 2026-11-23T00:00:00Z in epoch milliseconds.
const DEFAULT_START_MS: i64 = 1_795_392_000_000;
const DAY_MS: i64 = 86_400_000;
/// Output is handed to the writer in chunks of about this many bytes.
const CHUNK_BYTES: usize = 256 * 1024;
/// Zipf exponent of the type popularity.
const TYPE_ZIPF_S: f64 = 1.1;
/// Zipf exponent of the user and product popularity.
const ENTITY_ZIPF_S: f64 = 0.9;

/// Options of `eventctl gen`.
#[derive(Debug, Clone)]
pub struct GenOptions {
    /// Number of lines to write.
    pub events: u64,
    /// Seed of every random choice (schemas included).
    pub seed: u64,
    /// Number of distinct event types in total, business ones included (at least 8 are used).
    pub types: usize,
    /// Size of the user id space (`u1`..`uN`).
    pub users: u64,
    /// Size of the product id space (`p1`..`pN`).
    pub products: u64,
    /// Approximate target size in bytes of a valid line, reached with a `description` attribute.
    pub event_size: usize,
    /// Fraction of lines that are invalid, in [0, 1].
    pub bad_ratio: f64,
    /// Start of the event time range (epoch millis).
    pub start_ms: i64,
    /// Length of the event time range; times spread over `[start_ms, start_ms + span_ms)`.
    pub span_ms: i64,
    /// Schema evolution, type conflicts, nulls, empty containers, tricky strings, extra keys.
    pub evolve: bool,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            events: 10_000,
            seed: 42,
            types: 300,
            users: 100_000,
            products: 1_000_000,
            event_size: 1024,
            bad_ratio: 0.0,
            start_ms: DEFAULT_START_MS,
            span_ms: DAY_MS,
            evolve: true,
        }
    }
}

/// What was generated: counts so tests can check ingestion summaries.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GenSummary {
    /// Lines written (`valid + invalid`).
    pub lines: u64,
    /// Lines that satisfy the event contract.
    pub valid: u64,
    /// Lines that do not, by construction.
    pub invalid: u64,
    /// Bytes written, newlines included.
    pub bytes: u64,
    /// Invalid lines per contract reason code (only kinds that occurred).
    pub invalid_by_kind: BTreeMap<String, u64>,
}

/// Writes `opts.events` lines to `out`, each terminated by '\n'. Deterministic for a given opts
/// (same seed => identical bytes).
pub fn generate(opts: &GenOptions, out: &mut dyn Write) -> io::Result<GenSummary> {
    let mut g = Gen::new(opts);
    let bad_ratio = if opts.bad_ratio.is_finite() { opts.bad_ratio.clamp(0.0, 1.0) } else { 0.0 };
    let mut summary = GenSummary::default();
    let mut by_kind = [0u64; Bad::ALL.len()];
    let mut chunk: Vec<u8> = Vec::with_capacity(CHUNK_BYTES + 16 * 1024);
    for i in 0..opts.events {
        let bad = if bad_ratio > 0.0 && g.rng.random_bool(bad_ratio) {
            Some(g.rng.random_range(0..Bad::ALL.len()))
        } else {
            None
        };
        g.build(i, bad.map(|k| Bad::ALL[k]));
        g.line.push('\n');
        chunk.extend_from_slice(g.line.as_bytes());
        summary.lines += 1;
        summary.bytes += g.line.len() as u64;
        match bad {
            Some(k) => {
                summary.invalid += 1;
                by_kind[k] += 1;
            }
            None => summary.valid += 1,
        }
        if chunk.len() >= CHUNK_BYTES {
            out.write_all(&chunk)?;
            chunk.clear();
        }
    }
    if !chunk.is_empty() {
        out.write_all(&chunk)?;
    }
    out.flush()?;
    for (k, n) in by_kind.iter().enumerate() {
        if *n > 0 {
            summary.invalid_by_kind.insert(Bad::ALL[k].code().to_owned(), *n);
        }
    }
    Ok(summary)
}

// ---------------------------------------------------------------------------------------------
// Invalid lines

/// The kinds of invalid line, each named by the contract's reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bad {
    InvalidJson,
    MissingId,
    InvalidType,
    InvalidCreatedAt,
    CreatedAtOutOfRange,
    DuplicateKey,
    AttributesNotObject,
    NotAnObject,
}

impl Bad {
    const ALL: [Bad; 8] = [
        Bad::InvalidJson,
        Bad::MissingId,
        Bad::InvalidType,
        Bad::InvalidCreatedAt,
        Bad::CreatedAtOutOfRange,
        Bad::DuplicateKey,
        Bad::AttributesNotObject,
        Bad::NotAnObject,
    ];

    fn code(self) -> &'static str {
        match self {
            Bad::InvalidJson => "invalid_json",
            Bad::MissingId => "missing_id",
            Bad::InvalidType => "invalid_type",
            Bad::InvalidCreatedAt => "invalid_created_at",
            Bad::CreatedAtOutOfRange => "created_at_out_of_range",
            Bad::DuplicateKey => "duplicate_key",
            Bad::AttributesNotObject => "attributes_not_object",
            Bad::NotAnObject => "not_an_object",
        }
    }
}

const BAD_TYPES: [&str; 6] =
    ["../etc/passwd", "app/screen_opened", "..", "product_viewed/../../x", "events/2026/11", "a/../b"];

// ---------------------------------------------------------------------------------------------
// Types and schemas

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Biz {
    Viewed,
    Liked,
    Favorited,
    Contacted,
    Conversation,
    Listed,
    Sold,
    UserCreated,
    /// A results page: the products it showed (`product_ids`, 10 to 50 of them).
    SearchResults,
}

/// Business types with their wished popularity rank (0 = most frequent).
const BUSINESS: [(Biz, &str, usize); 9] = [
    (Biz::Viewed, "product_viewed", 0),
    (Biz::Liked, "product_liked", 1),
    (Biz::Favorited, "product_favorited", 2),
    (Biz::SearchResults, "search_results_shown", 3),
    (Biz::Contacted, "product_contacted", 4),
    (Biz::Conversation, "conversation_started", 6),
    (Biz::Listed, "product_listed", 8),
    (Biz::Sold, "product_sold", 11),
    (Biz::UserCreated, "user_created", 15),
];

#[derive(Debug, Clone, Copy)]
enum TypeRef {
    Biz(Biz, &'static str),
    Synth(usize),
}

#[derive(Debug, Clone, Copy)]
enum StrStyle {
    Words,
    Hex,
    Url,
}

#[derive(Debug, Clone)]
enum Kind {
    Int { max: u64 },
    Float { max: u64, decimals: u32 },
    Bool,
    Str(StrStyle),
    Enum(Vec<&'static str>),
    Object(Vec<(String, Kind)>),
    IntArray { max: u64 },
    StrArray,
}

#[derive(Debug, Clone)]
struct Field {
    name: String,
    kind: Kind,
    /// Probability that the field is present in an event.
    presence: f64,
    /// Run progress (0..1) from which the field exists (0 for the original schema).
    since: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConflictKind {
    /// A string holding digits where an integer was.
    IntAsString,
    /// A fractional number where an integer was.
    IntAsFloat,
    /// An object where a string was.
    StrAsObject,
}

#[derive(Debug, Clone, Copy)]
struct Conflict {
    field: usize,
    kind: ConflictKind,
}

#[derive(Debug, Clone)]
struct SynthType {
    name: String,
    has_user: bool,
    fields: Vec<Field>,
    conflict: Option<Conflict>,
}

const AREAS: [&str; 16] = [
    "app", "web", "checkout", "search", "feed", "profile", "chat", "notification", "payment", "ads",
    "onboarding", "settings", "wallet", "shipping", "review", "sdk",
];
const NOUNS: [&str; 24] = [
    "screen", "button", "banner", "filter", "card", "modal", "tab", "menu", "form", "list", "map",
    "photo", "video", "coupon", "badge", "toast", "carousel", "widget", "link", "player", "search_bar",
    "cart", "pin", "popup",
];
const VERBS: [&str; 20] = [
    "opened", "clicked", "shown", "dismissed", "scrolled", "submitted", "failed", "loaded", "closed",
    "expanded", "shared", "selected", "swiped", "refreshed", "saved", "viewed", "tapped", "hidden",
    "reported", "completed",
];
const FIELD_NOUNS: [&str; 40] = [
    "screen", "button", "item", "session", "page", "query", "filter", "banner", "cart", "promo", "photo",
    "video", "message", "search", "feed", "card", "slot", "device", "network", "battery", "location",
    "price", "seller", "buyer", "review", "badge", "tab", "menu", "form", "step", "coupon", "shipment",
    "payment", "ad", "campaign", "experiment", "widget", "thread", "reply", "upload",
];
const ENUM_POOL: [&str; 32] = [
    "control", "variant_a", "variant_b", "pending", "active", "done", "failed", "cancelled", "new",
    "used", "like_new", "refurbished", "small", "medium", "large", "xl", "wifi", "cellular", "offline",
    "light", "dark", "system", "grid", "list", "map", "top", "bottom", "left", "right", "primary",
    "secondary", "none",
];
const COUNTRIES: [&str; 12] = ["ES", "US", "FR", "IT", "PT", "DE", "GB", "MX", "BR", "NL", "MA", "JP"];
const CHANNELS: [&str; 7] = ["organic", "referral", "google_ads", "facebook", "tiktok", "apple_search", "email"];
const CATEGORIES: [&str; 12] = [
    "electronics", "fashion", "home", "sports", "toys", "books", "motors", "real_estate", "services",
    "garden", "collectibles", "baby",
];
/// Strings that exercise escaping and lossless storage.
const TRICKY: [&str; 8] = [
    "caf\u{e9} \"quoted\" \n newline",
    "tab\there \\ backslash / slash",
    "emoji \u{1F600} and \u{65E5}\u{672C}\u{8A9E}",
    "control \u{1} \u{1f} chars",
    "</script><b>html & co</b>",
    "line\u{2028}separator\u{2029}",
    "  leading and trailing spaces  ",
    "\u{feff}bom and \u{7f} del",
];
/// Words of the `description` padding: 128 entries (7 bits per pick), none needs escaping.
const WORDS: [&str; 128] = [
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "bright", "vintage", "lamp",
    "barely", "used", "perfect", "condition", "original", "box", "included", "pickup", "only", "in",
    "downtown", "shipping", "available", "negotiable", "price", "for", "fast", "sale", "wooden",
    "table", "with", "four", "chairs", "minor", "scratches", "on", "the", "surface", "bike", "helmet",
    "size", "medium", "black", "white", "red", "blue", "green", "phone", "case", "charger", "cable",
    "screen", "protector", "never", "opened", "gift", "receipt", "warranty", "until", "next", "year",
    "smoke", "free", "home", "pet", "friendly", "garden", "tools", "set", "drill", "battery", "kids",
    "toys", "books", "novel", "classic", "edition", "signed", "by", "author", "jacket", "leather",
    "winter", "summer", "shoes", "running", "trail", "size", "forty", "two", "camera", "lens", "tripod",
    "bag", "vinyl", "records", "collection", "rare", "pressing", "sofa", "three", "seats", "grey",
    "fabric", "washable", "covers", "caf\u{e9}", "na\u{ef}ve", "\u{fc}ber", "fa\u{e7}ade",
    "jalape\u{f1}o", "espa\u{f1}a", "\u{65E5}\u{672C}", "ok,", "great.", "thanks!", "asap;", "and",
    "or", "very", "good", "deal", "see", "photos", "contact", "me", "soon",
];

impl Kind {
    fn random(r: &mut StdRng, nested: bool) -> Kind {
        let roll = r.random_range(0..100);
        // Nested objects hold scalars only.
        let roll = if nested { roll % 67 } else { roll };
        match roll {
            0..=19 => Kind::Int { max: [10, 100, 1_000, 100_000, 10_000_000, 1 << 40][r.random_range(0..6)] },
            20..=33 => Kind::Float { max: [1, 100, 10_000][r.random_range(0..3)], decimals: r.random_range(1..=4) },
            34..=45 => Kind::Bool,
            46..=57 => Kind::Str([StrStyle::Words, StrStyle::Words, StrStyle::Hex, StrStyle::Url][r.random_range(0..4)]),
            58..=69 => {
                let n = r.random_range(3..=8);
                let start = r.random_range(0..ENUM_POOL.len());
                Kind::Enum((0..n).map(|k| ENUM_POOL[(start + k) % ENUM_POOL.len()]).collect())
            }
            70..=81 => {
                let n = r.random_range(2..=3);
                let mut names = Vec::new();
                let mut subs = Vec::with_capacity(n);
                for _ in 0..n {
                    let kind = Kind::random(r, true);
                    let name = unique_field_name(r, &kind, &mut names);
                    subs.push((name, kind));
                }
                Kind::Object(subs)
            }
            82..=90 => Kind::IntArray { max: [100, 10_000, 1 << 32][r.random_range(0..3)] },
            _ => Kind::StrArray,
        }
    }

    fn suffixes(&self) -> &'static [&'static str] {
        match self {
            Kind::Int { .. } => &["count", "ms", "index", "total", "size", "rank", "seq"],
            Kind::Float { .. } => &["ratio", "amount", "score", "lat", "lng", "rate"],
            Kind::Bool => &["enabled", "visible", "flag", "ok", "first"],
            Kind::Str(StrStyle::Words) => &["name", "text", "label", "title"],
            Kind::Str(StrStyle::Hex) => &["ref", "token", "hash"],
            Kind::Str(StrStyle::Url) => &["url", "link"],
            Kind::Enum(_) => &["kind", "status", "variant", "mode", "state"],
            Kind::Object(_) => &["info", "ctx", "details", "stats"],
            Kind::IntArray { .. } => &["ids", "offsets", "codes"],
            Kind::StrArray => &["tags", "keys", "labels"],
        }
    }
}

/// A field name fitting the kind (`screen_count`, `promo_url`...), unique within `used`.
fn unique_field_name(r: &mut StdRng, kind: &Kind, used: &mut Vec<String>) -> String {
    let suffixes = kind.suffixes();
    for attempt in 0..32 {
        let noun = FIELD_NOUNS[r.random_range(0..FIELD_NOUNS.len())];
        let suffix = suffixes[r.random_range(0..suffixes.len())];
        let name = if attempt < 16 { format!("{noun}_{suffix}") } else { format!("{noun}_{suffix}_{attempt}") };
        if !used.contains(&name) {
            used.push(name.clone());
            return name;
        }
    }
    let name = format!("field_{}", used.len());
    used.push(name.clone());
    name
}

fn synth_type(seed: u64, j: usize) -> SynthType {
    let mut r = StdRng::seed_from_u64(mix64(seed ^ 0x5eed_7e9e_0000_0000 ^ mix64(j as u64 + 1)));
    let area = AREAS[r.random_range(0..AREAS.len())];
    let noun = NOUNS[r.random_range(0..NOUNS.len())];
    let verb = VERBS[r.random_range(0..VERBS.len())];
    let sep = match r.random_range(0..100) {
        0..=4 => '.',
        5..=7 => '-',
        _ => '_',
    };
    let name = format!("{area}{sep}{noun}_{verb}_{j:03}");
    let has_user = r.random_bool(0.85);
    let mut used = Vec::new();
    let mut fields = Vec::new();
    let n = r.random_range(3..=12);
    for _ in 0..n {
        let kind = Kind::random(&mut r, false);
        let name = unique_field_name(&mut r, &kind, &mut used);
        let presence = if r.random_bool(0.25) { r.random_range(0.3..0.95) } else { 1.0 };
        fields.push(Field { name, kind, presence, since: 0.0 });
    }
    // Additive evolution: drawn whatever `evolve` says so that base schemas do not depend on it.
    if r.random_bool(1.0 / 3.0) {
        let since = r.random_range(0.3..0.7);
        for _ in 0..r.random_range(1..=2) {
            let kind = Kind::random(&mut r, false);
            let name = unique_field_name(&mut r, &kind, &mut used);
            fields.push(Field { name, kind, presence: 1.0, since });
        }
    }
    SynthType { name, has_user, fields, conflict: None }
}

// ---------------------------------------------------------------------------------------------
// The generator

struct Gen<'o> {
    opts: &'o GenOptions,
    rng: StdRng,
    /// Types by popularity rank.
    types: Vec<TypeRef>,
    synth: Vec<SynthType>,
    /// Cumulative probabilities of the ranks.
    cdf: Vec<f64>,
    users: Zipf<f64>,
    products: Zipf<f64>,
    n_users: u64,
    n_products: u64,
    evolve: bool,
    id: String,
    attrs: String,
    meta: String,
    tail: String,
    line: String,
    tmp: String,
}

impl<'o> Gen<'o> {
    fn new(opts: &'o GenOptions) -> Self {
        let total = opts.types.max(BUSINESS.len());
        let n_synth = total - BUSINESS.len();
        let mut types: Vec<Option<TypeRef>> = vec![None; total];
        for (k, (biz, name, wished)) in BUSINESS.iter().enumerate() {
            // Wished ranks increase by at least 1 and the cap by exactly 1: ranks stay distinct.
            let rank = (*wished).min(total - BUSINESS.len() + k);
            types[rank] = Some(TypeRef::Biz(*biz, name));
        }
        let mut next = 0;
        let types: Vec<TypeRef> = types
            .into_iter()
            .map(|t| {
                t.unwrap_or_else(|| {
                    next += 1;
                    TypeRef::Synth(next - 1)
                })
            })
            .collect();
        let mut synth: Vec<SynthType> = (0..n_synth).map(|j| synth_type(opts.seed, j)).collect();
        if opts.evolve {
            assign_conflicts(&mut synth);
        } else {
            for t in &mut synth {
                t.fields.retain(|f| f.since == 0.0);
            }
        }
        let mut cdf = Vec::with_capacity(total);
        let mut acc = 0.0;
        for r in 0..total {
            acc += ((r + 1) as f64).powf(-TYPE_ZIPF_S);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        let n_users = opts.users.max(1);
        let n_products = opts.products.max(1);
        // n >= 1 and s >= 0: these cannot fail.
        let users = Zipf::new(n_users as f64, ENTITY_ZIPF_S).unwrap_or_else(|_| unreachable!());
        let products = Zipf::new(n_products as f64, ENTITY_ZIPF_S).unwrap_or_else(|_| unreachable!());
        Gen {
            opts,
            rng: StdRng::seed_from_u64(mix64(opts.seed ^ 0x0e7e_47c7_1000_0001)),
            types,
            synth,
            cdf,
            users,
            products,
            n_users,
            n_products,
            evolve: opts.evolve,
            id: String::with_capacity(64),
            attrs: String::with_capacity(2048),
            meta: String::with_capacity(256),
            tail: String::with_capacity(512),
            line: String::with_capacity(4096),
            tmp: String::with_capacity(4096),
        }
    }

    fn pick_rank(&mut self) -> usize {
        let u: f64 = self.rng.random();
        self.cdf.partition_point(|&c| c <= u).min(self.cdf.len() - 1)
    }

    fn pick_user(&mut self) -> u64 {
        (self.users.sample(&mut self.rng) as u64).clamp(1, self.n_users)
    }

    fn pick_product(&mut self) -> u64 {
        (self.products.sample(&mut self.rng) as u64).clamp(1, self.n_products)
    }

    fn created_at(&mut self, i: u64) -> i64 {
        let o = self.opts;
        let start = i128::from(o.start_ms.max(0));
        if o.span_ms <= 0 {
            return start as i64;
        }
        let span = i128::from(o.span_ms);
        let base = start + span * i128::from(i) / i128::from(o.events.max(1));
        let jitter = i128::from(self.rng.random_range(-30_000i64..=30_000));
        let late = if self.rng.random_bool(0.005) { i128::from(self.rng.random_range(0i64..=3_600_000)) } else { 0 };
        let t = (base + jitter - late).clamp(start, start + span - 1);
        i64::try_from(t).unwrap_or(i64::MAX)
    }

    /// Builds line `i` (without its newline) into `self.line`.
    fn build(&mut self, i: u64, bad: Option<Bad>) {
        let progress = i as f64 / self.opts.events.max(1) as f64;
        let rank = self.pick_rank();
        let ty = self.types[rank];

        self.id.clear();
        write_id(&mut self.id, self.opts.seed, i);

        self.attrs.clear();
        self.attrs.push('{');
        match ty {
            TypeRef::Biz(b, _) => self.biz_attrs(b),
            TypeRef::Synth(k) => self.synth_attrs(k, progress),
        }

        self.meta.clear();
        let created_at = self.created_at(i);
        self.write_meta(created_at, bad);

        // Everything after the attributes: optional `data.relationships`, then meta and extras.
        self.tail.clear();
        if self.evolve && self.rng.random_bool(0.003) {
            let u = self.pick_user();
            let _ = write!(self.tail, r#","relationships":{{"author":{{"data":{{"type":"user","id":"u{u}"}}}}}}"#);
        }
        self.tail.push('}');
        let data_tail = self.tail.len();
        self.tail.push_str(",\"meta\":");
        self.tail.push_str(&self.meta);
        if self.evolve && self.rng.random_bool(0.003) {
            let _ = write!(self.tail, r#","links":{{"self":"https://api.example.com/events/{}"}}"#, self.id);
        }
        self.tail.push('}');

        let line = &mut self.line;
        line.clear();
        line.push_str("{\"data\":{");
        if bad != Some(Bad::MissingId) {
            line.push_str("\"id\":\"");
            line.push_str(&self.id);
            line.push_str("\",");
        }
        line.push_str("\"type\":");
        if bad == Some(Bad::InvalidType) {
            push_json_str(line, BAD_TYPES[self.rng.random_range(0..BAD_TYPES.len())]);
        } else {
            match ty {
                TypeRef::Biz(_, name) => push_json_str(line, name),
                TypeRef::Synth(k) => push_json_str(line, &self.synth[k].name),
            }
        }
        line.push_str(",\"attributes\":");
        if bad == Some(Bad::AttributesNotObject) {
            // The attributes wrapped in a list: `[{...}]`.
            line.push_str("[{");
            line.push_str(&self.attrs[1..]);
            line.push_str("}]");
        } else {
            line.push_str(&self.attrs);
            // Pad with a description so that the line is close to a per-line target size.
            let target = (self.opts.event_size as f64 * self.rng.random_range(0.8..1.2)) as usize;
            const KEY: &str = "\"description\":\"";
            let comma = usize::from(self.attrs.len() > 1);
            let fixed = line.len() + comma + KEY.len() + 2 + self.tail.len() + 1;
            if target > fixed + 8 {
                if comma == 1 {
                    line.push(',');
                }
                line.push_str(KEY);
                push_words(line, &mut self.rng, target - fixed);
                line.push('"');
            }
            line.push('}');
        }
        let data_end = line.len() + data_tail;
        line.push_str(&self.tail);

        match bad {
            Some(Bad::DuplicateKey) => {
                // {"data":D,"data":D,"meta":...}
                const OPEN: usize = "{\"data\":".len();
                self.tmp.clear();
                self.tmp.push_str(&self.line[..data_end]);
                self.tmp.push_str(",\"data\":");
                self.tmp.push_str(&self.line[OPEN..data_end]);
                self.tmp.push_str(&self.line[data_end..]);
                std::mem::swap(&mut self.line, &mut self.tmp);
            }
            Some(Bad::InvalidJson) => {
                // Truncated before the final brace, at a char boundary: never valid, never empty.
                let len = self.line.len();
                let mut cut = self.rng.random_range(1..len - 1);
                while !self.line.is_char_boundary(cut) {
                    cut -= 1;
                }
                self.line.truncate(cut.max(1));
            }
            Some(Bad::NotAnObject) => match self.rng.random_range(0..3) {
                0 => {
                    self.line.insert(0, '[');
                    self.line.push(']');
                }
                1 => {
                    self.line.clear();
                    let _ = write!(self.line, "{created_at}");
                }
                _ => {
                    self.line.clear();
                    let _ = write!(self.line, "[\"{}\",{created_at}]", self.id);
                }
            },
            _ => {}
        }
    }

    fn write_meta(&mut self, created_at: i64, bad: Option<Bad>) {
        let m = &mut self.meta;
        m.push_str("{\"created_at\":");
        match bad {
            Some(Bad::InvalidCreatedAt) => match self.rng.random_range(0..4) {
                0 => {
                    let _ = write!(m, "{}.{}e12", created_at / 1_000_000_000_000, (created_at / 100_000_000_000) % 10);
                }
                1 => {
                    let _ = write!(m, "{created_at}.5");
                }
                2 => {
                    let _ = write!(m, "\"{created_at}\"");
                }
                _ => m.push_str("\"2026-11-23T10:00:00Z\""),
            },
            Some(Bad::CreatedAtOutOfRange) => {
                let _ = write!(m, "-{}", self.rng.random_range(1..=created_at.max(1)));
            }
            _ => {
                let _ = write!(m, "{created_at}");
            }
        }
        let source = match self.rng.random_range(0..100) {
            0..=34 => "ios",
            35..=69 => "android",
            70..=89 => "web",
            _ => "backend",
        };
        m.push_str(",\"source\":\"");
        m.push_str(source);
        m.push('"');
        if source == "ios" || source == "android" {
            let _ = write!(
                m,
                ",\"app_version\":\"{}.{}.{}\"",
                self.rng.random_range(5..=7),
                self.rng.random_range(0..30),
                self.rng.random_range(0..10)
            );
        }
        if self.rng.random_bool(0.3) {
            let _ = write!(m, ",\"trace_id\":\"{:016x}{:016x}\"", self.rng.next_u64(), self.rng.next_u64());
        }
        m.push('}');
    }

    fn biz_attrs(&mut self, b: Biz) {
        match b {
            Biz::UserCreated => {
                let u = self.rng.random_range(1..=self.n_users);
                let country = COUNTRIES[self.rng.random_range(0..COUNTRIES.len())];
                let channel = CHANNELS[self.rng.random_range(0..CHANNELS.len())];
                let _ = write!(self.attrs, r#""user_id":"u{u}","country":"{country}","signup_channel":"{channel}""#);
            }
            Biz::SearchResults => {
                let u = self.pick_user();
                let n = self.rng.random_range(10..=50usize);
                let query = WORDS[self.rng.random_range(0..WORDS.len())];
                let page = self.rng.random_range(1..=3u32);
                let _ = write!(self.attrs, r#""user_id":"u{u}","query":"{query}","page":{page},"product_ids":["#);
                for k in 0..n {
                    let p = self.pick_product();
                    let _ = write!(self.attrs, r#"{}"p{p}""#, if k == 0 { "" } else { "," });
                }
                self.attrs.push(']');
            }
            Biz::Listed => {
                let p = self.pick_product();
                let owner = owner_of(p, self.n_users);
                let cents = price_cents(p);
                let category = CATEGORIES[(mix64(p ^ 0xca7e_9021) % CATEGORIES.len() as u64) as usize];
                let _ = write!(
                    self.attrs,
                    r#""user_id":"u{owner}","product_id":"p{p}","price":{}.{:02},"category":"{category}""#,
                    cents / 100,
                    cents % 100
                );
            }
            _ => {
                let p = self.pick_product();
                let owner = owner_of(p, self.n_users);
                let mut u = self.pick_user();
                if u == owner {
                    u = u % self.n_users + 1;
                }
                let _ = write!(self.attrs, r#""user_id":"u{u}","product_id":"p{p}","owner_id":"u{owner}""#);
                match b {
                    Biz::Sold => {
                        let cents = price_cents(p);
                        let _ = write!(self.attrs, r#","price":{}.{:02}"#, cents / 100, cents % 100);
                    }
                    Biz::Conversation => {
                        let _ = write!(self.attrs, r#","conversation_id":"c{:016x}""#, mix64(u.rotate_left(32) ^ p));
                    }
                    _ => {}
                }
            }
        }
    }

    fn synth_attrs(&mut self, k: usize, progress: f64) {
        let user = if self.synth[k].has_user { Some(self.pick_user()) } else { None };
        let Gen { rng, attrs, synth, evolve, .. } = self;
        let evolve = *evolve;
        let ty = &synth[k];
        if let Some(u) = user {
            let _ = write!(attrs, r#""user_id":"u{u}""#);
        }
        let conflict = match ty.conflict {
            Some(c) if rng.random_bool(0.01) => Some(c),
            _ => None,
        };
        let null_field = if evolve && rng.random_bool(0.005) { Some(rng.random_range(0..ty.fields.len())) } else { None };
        for (fi, f) in ty.fields.iter().enumerate() {
            if f.since > progress || (f.presence < 1.0 && !rng.random_bool(f.presence)) {
                continue;
            }
            if attrs.len() > 1 {
                attrs.push(',');
            }
            attrs.push('"');
            attrs.push_str(&f.name);
            attrs.push_str("\":");
            if null_field == Some(fi) {
                attrs.push_str("null");
            } else if let Some(c) = conflict.filter(|c| c.field == fi) {
                write_conflict(attrs, rng, c.kind);
            } else {
                write_value(attrs, rng, &f.kind, evolve);
            }
        }
    }
}

/// Gives a few frequent (but not the most frequent) synthetic types one conflicting field each.
fn assign_conflicts(synth: &mut [SynthType]) {
    let wanted = [ConflictKind::IntAsString, ConflictKind::StrAsObject, ConflictKind::IntAsFloat];
    let mut taken = vec![false; synth.len()];
    for kind in wanted {
        for j in 1..synth.len().min(32) {
            if taken[j] {
                continue;
            }
            let fits = |f: &Field| {
                f.since == 0.0
                    && match kind {
                        ConflictKind::IntAsString | ConflictKind::IntAsFloat => matches!(f.kind, Kind::Int { .. }),
                        ConflictKind::StrAsObject => matches!(f.kind, Kind::Str(_) | Kind::Enum(_)),
                    }
            };
            if let Some(field) = synth[j].fields.iter().position(fits) {
                synth[j].conflict = Some(Conflict { field, kind });
                taken[j] = true;
                break;
            }
        }
    }
}

fn write_conflict(buf: &mut String, rng: &mut StdRng, kind: ConflictKind) {
    match kind {
        ConflictKind::IntAsString => {
            let _ = write!(buf, "\"{}\"", rng.random_range(0..10_000u32));
        }
        ConflictKind::IntAsFloat => {
            let _ = write!(buf, "{}.5", rng.random_range(0..10_000u32));
        }
        ConflictKind::StrAsObject => {
            buf.push_str("{\"text\":");
            push_words_json(buf, rng, 2);
            buf.push_str(",\"lang\":\"en\"}");
        }
    }
}

fn write_value(buf: &mut String, rng: &mut StdRng, kind: &Kind, evolve: bool) {
    match kind {
        Kind::Int { max } => {
            let _ = write!(buf, "{}", rng.random_range(0..=*max));
        }
        Kind::Float { max, decimals } => {
            let scale = 10u64.pow(*decimals);
            let v = rng.random_range(0..=max * scale);
            let _ = write!(buf, "{}.{:0width$}", v / scale, v % scale, width = *decimals as usize);
        }
        Kind::Bool => buf.push_str(if rng.random_bool(0.5) { "true" } else { "false" }),
        Kind::Str(style) => {
            if evolve && rng.random_bool(0.005) {
                let s = TRICKY[rng.random_range(0..TRICKY.len())];
                if rng.random_bool(0.5) { push_json_str(buf, s) } else { push_json_str_ascii(buf, s) }
                return;
            }
            match style {
                StrStyle::Words => {
                    let n = rng.random_range(1..=3);
                    push_words_json(buf, rng, n);
                }
                StrStyle::Hex => {
                    let _ = write!(buf, "\"{:016x}\"", rng.next_u64());
                }
                StrStyle::Url => {
                    let _ = write!(
                        buf,
                        "\"https://example.com/{}/{}?ref={}\"",
                        FIELD_NOUNS[rng.random_range(0..FIELD_NOUNS.len())],
                        rng.random_range(1..100_000u32),
                        rng.random_range(0..100u32)
                    );
                }
            }
        }
        Kind::Enum(values) => {
            // Skewed towards the first values.
            let a = rng.random_range(0..values.len());
            let b = rng.random_range(0..values.len());
            push_json_str(buf, values[a.min(b)]);
        }
        Kind::Object(subs) => {
            if evolve && rng.random_bool(0.01) {
                buf.push_str("{}");
                return;
            }
            buf.push('{');
            for (n, (name, sub)) in subs.iter().enumerate() {
                if n > 0 {
                    buf.push(',');
                }
                buf.push('"');
                buf.push_str(name);
                buf.push_str("\":");
                write_value(buf, rng, sub, false);
            }
            buf.push('}');
        }
        Kind::IntArray { max } => {
            let n = if evolve && rng.random_bool(0.02) { 0 } else { rng.random_range(1..=4) };
            buf.push('[');
            for k in 0..n {
                if k > 0 {
                    buf.push(',');
                }
                let _ = write!(buf, "{}", rng.random_range(0..=*max));
            }
            buf.push(']');
        }
        Kind::StrArray => {
            let n = if evolve && rng.random_bool(0.02) { 0 } else { rng.random_range(1..=4) };
            buf.push('[');
            for k in 0..n {
                if k > 0 {
                    buf.push(',');
                }
                push_json_str(buf, ENUM_POOL[rng.random_range(0..ENUM_POOL.len())]);
            }
            buf.push(']');
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// A bijective 64-bit mixer (murmur3's finalizer).
fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// A uuid-shaped id that is an injective function of (seed, counter): unique within a run and
/// across seeds.
fn write_id(buf: &mut String, seed: u64, i: u64) {
    let hi = mix64(i ^ 0x9e37_79b9_7f4a_7c15);
    let lo = seed ^ mix64(hi ^ 0xd1b5_4a32_d192_ed03);
    let _ = write!(
        buf,
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    );
}

/// The owner of a product: a pure function of the product id.
fn owner_of(product: u64, users: u64) -> u64 {
    mix64(product ^ 0x0a11_ce00_0000_0000) % users + 1
}

/// The price of a product in cents: 1.00 to about 2000.00, skewed towards cheap.
fn price_cents(product: u64) -> u64 {
    let u = (mix64(product ^ 0x9e1c_e000) % 10_000) as f64 / 10_000.0;
    100 + (u * u * u * 199_900.0) as u64
}

/// Appends space-separated words of at most `budget` bytes (a few bytes short at worst).
fn push_words(buf: &mut String, rng: &mut StdRng, budget: usize) {
    let start = buf.len();
    let mut bits = 0u64;
    let mut left = 0u32;
    loop {
        if left < 7 {
            bits = rng.next_u64();
            left = 63;
        }
        let w = WORDS[(bits & 127) as usize];
        bits >>= 7;
        left -= 7;
        let sep = usize::from(buf.len() > start);
        if buf.len() - start + sep + w.len() > budget {
            break;
        }
        if sep == 1 {
            buf.push(' ');
        }
        buf.push_str(w);
    }
}

/// Appends `n` words as one JSON string.
fn push_words_json(buf: &mut String, rng: &mut StdRng, n: usize) {
    buf.push('"');
    for k in 0..n {
        if k > 0 {
            buf.push(' ');
        }
        buf.push_str(WORDS[rng.random_range(0..WORDS.len())]);
    }
    buf.push('"');
}

/// Appends `s` as a JSON string (escapes `"`, `\` and control characters).
fn push_json_str(buf: &mut String, s: &str) {
    buf.push('"');
    let mut from = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        buf.push_str(&s[from..i]);
        if esc.is_empty() {
            let _ = write!(buf, "\\u{b:04x}");
        } else {
            buf.push_str(esc);
        }
        from = i + 1;
    }
    buf.push_str(&s[from..]);
    buf.push('"');
}

/// Appends `s` as a JSON string in pure ASCII: non-ASCII characters as `\uXXXX` escapes
/// (surrogate pairs beyond the BMP).
fn push_json_str_ascii(buf: &mut String, s: &str) {
    buf.push('"');
    for c in s.chars() {
        match c {
            '"' => buf.push_str("\\\""),
            '\\' => buf.push_str("\\\\"),
            '\n' => buf.push_str("\\n"),
            c if (c as u32) < 0x20 || !c.is_ascii() => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(buf, "\\u{:04x}", u);
                }
            }
            c => buf.push(c),
        }
    }
    buf.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
    use serde_json::Value;
    use std::collections::{HashMap, HashSet};

    fn run(opts: &GenOptions) -> (Vec<u8>, GenSummary) {
        let mut out = Vec::new();
        let s = generate(opts, &mut out).expect("writing to a Vec");
        (out, s)
    }

    fn opts(events: u64, seed: u64) -> GenOptions {
        GenOptions { events, seed, ..GenOptions::default() }
    }

    fn lines(buf: &[u8]) -> Vec<&str> {
        let text = std::str::from_utf8(buf).expect("UTF-8 output");
        assert!(text.ends_with('\n'));
        text[..text.len() - 1].split('\n').collect()
    }

    fn valid_type(t: &str) -> bool {
        let b = t.as_bytes();
        !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b[1..].iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
    }

    /// Top-level keys, duplicates kept.
    struct TopKeys(Vec<String>);
    impl<'de> Deserialize<'de> for TopKeys {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = TopKeys;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<TopKeys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some(k) = m.next_key::<String>()? {
                        m.next_value::<IgnoredAny>()?;
                        keys.push(k);
                    }
                    Ok(TopKeys(keys))
                }
                fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<TopKeys, A::Error> {
                    Ok(TopKeys(Vec::new()))
                }
            }
            d.deserialize_any(V)
        }
    }

    /// The contract's verdict on a line, re-implemented for the test (None = valid).
    fn classify(line: &str) -> Option<&'static str> {
        let v: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(_) => return Some("invalid_json"),
        };
        let Some(top) = v.as_object() else { return Some("not_an_object") };
        let keys = serde_json::from_str::<TopKeys>(line).map(|k| k.0).unwrap_or_default();
        if keys.len() != keys.iter().collect::<HashSet<_>>().len() {
            return Some("duplicate_key");
        }
        let data = top.get("data").and_then(Value::as_object).expect("data object");
        match data.get("id") {
            None => return Some("missing_id"),
            Some(Value::String(s)) if !s.is_empty() => {}
            Some(_) => return Some("invalid_id"),
        }
        match data.get("type") {
            Some(Value::String(t)) if valid_type(t) => {}
            _ => return Some("invalid_type"),
        }
        if !data.get("attributes").is_some_and(Value::is_object) {
            return Some("attributes_not_object");
        }
        let ca = top.get("meta").and_then(|m| m.get("created_at")).expect("created_at");
        match ca.as_i64() {
            None => Some("invalid_created_at"),
            Some(n) if n < 0 => Some("created_at_out_of_range"),
            Some(_) => None,
        }
    }

    #[test]
    fn deterministic() {
        let o = GenOptions { bad_ratio: 0.1, ..opts(3000, 7) };
        let (a, sa) = run(&o);
        let (b, sb) = run(&o);
        assert_eq!(a, b);
        assert_eq!(sa.bytes, sb.bytes);
        let (c, _) = run(&GenOptions { seed: 8, ..o });
        assert_ne!(a, c);
    }

    #[test]
    fn unique_ids_within_and_across_seeds() {
        let mut seen = HashSet::new();
        for seed in [1, 2] {
            let (buf, s) = run(&opts(5000, seed));
            for l in lines(&buf) {
                let v: Value = serde_json::from_str(l).expect("valid line");
                let id = v["data"]["id"].as_str().expect("id").to_owned();
                assert!(seen.insert(id), "duplicate id");
            }
            assert_eq!(s.valid, 5000);
        }
        assert_eq!(seen.len(), 10_000);
    }

    #[test]
    fn summary_counts_match_output() {
        let o = GenOptions { bad_ratio: 0.05, ..opts(4000, 3) };
        let (buf, s) = run(&o);
        let ls = lines(&buf);
        assert_eq!(ls.len() as u64, s.lines);
        assert_eq!(s.lines, 4000);
        assert_eq!(s.bytes, buf.len() as u64);
        assert_eq!(s.valid + s.invalid, s.lines);
        assert_eq!(s.invalid_by_kind.values().sum::<u64>(), s.invalid);
        assert!(ls.iter().all(|l| !l.trim().is_empty()));
        let (empty, s0) = run(&opts(0, 3));
        assert!(empty.is_empty());
        assert_eq!(s0.lines, 0);
    }

    #[test]
    fn valid_lines_have_the_required_fields() {
        let o = opts(20_000, 11);
        let (buf, _) = run(&o);
        for l in lines(&buf) {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            let id = v["data"]["id"].as_str().expect("id");
            assert!(!id.is_empty());
            let t = v["data"]["type"].as_str().expect("type");
            assert!(valid_type(t), "{t}");
            let attrs = v["data"]["attributes"].as_object().expect("attributes object");
            assert!(!attrs.is_empty());
            let ca = v["meta"]["created_at"].as_i64().expect("integer created_at");
            assert!(ca >= o.start_ms && ca < o.start_ms + o.span_ms, "{ca}");
            assert!(v["meta"]["source"].is_string());
            assert_eq!(classify(l), None, "{l}");
        }
    }

    #[test]
    fn bad_lines_are_counted_per_kind() {
        let o = GenOptions { bad_ratio: 0.3, ..opts(8000, 5) };
        let (buf, s) = run(&o);
        let mut counted: BTreeMap<String, u64> = BTreeMap::new();
        for l in lines(&buf) {
            if let Some(kind) = classify(l) {
                *counted.entry(kind.to_owned()).or_default() += 1;
            }
        }
        assert_eq!(counted, s.invalid_by_kind);
        for kind in Bad::ALL {
            assert!(s.invalid_by_kind.get(kind.code()).copied().unwrap_or(0) > 100, "{}", kind.code());
        }
        let ratio = s.invalid as f64 / s.lines as f64;
        assert!((0.27..0.33).contains(&ratio), "{ratio}");
    }

    #[test]
    fn lines_average_close_to_event_size() {
        for size in [512usize, 1024, 4096] {
            let o = GenOptions { event_size: size, ..opts(3000, 9) };
            let (_, s) = run(&o);
            let avg = s.bytes as f64 / s.lines as f64;
            assert!((avg - size as f64).abs() < 0.3 * size as f64, "size {size}: average {avg}");
        }
    }

    #[test]
    fn business_types_and_their_frequencies() {
        let (buf, _) = run(&opts(40_000, 13));
        let mut count: HashMap<String, u64> = HashMap::new();
        let mut owners: HashMap<String, String> = HashMap::new();
        for l in lines(&buf) {
            let v: Value = serde_json::from_str(l).expect("valid");
            let t = v["data"]["type"].as_str().expect("type").to_owned();
            let a = &v["data"]["attributes"];
            if t.starts_with("product_") || t == "conversation_started" {
                let p = a["product_id"].as_str().expect("product_id").to_owned();
                let owner = if t == "product_listed" { &a["user_id"] } else { &a["owner_id"] };
                let owner = owner.as_str().expect("owner").to_owned();
                assert!(a["user_id"].as_str().is_some_and(|u| u.starts_with('u')));
                if let Some(prev) = owners.insert(p, owner.clone()) {
                    assert_eq!(prev, owner, "a product changed owner");
                }
            }
            match t.as_str() {
                "product_listed" => {
                    assert!(a["price"].is_f64() && a["category"].is_string());
                }
                "product_sold" => assert!(a["price"].is_f64()),
                "conversation_started" => assert!(a["conversation_id"].is_string()),
                "user_created" => assert!(a["country"].is_string() && a["signup_channel"].is_string()),
                _ => {}
            }
            *count.entry(t).or_default() += 1;
        }
        let c = |t: &str| count.get(t).copied().unwrap_or(0);
        let order = [
            c("product_viewed"),
            c("product_liked").min(c("product_favorited")),
            c("product_contacted"),
            c("conversation_started"),
            c("product_listed"),
            c("product_sold"),
            c("user_created"),
        ];
        assert!(order.windows(2).all(|w| w[0] > w[1]), "{order:?}");
        assert!(c("user_created") > 0);
        assert!(count.len() <= 300 && count.len() > 100, "{}", count.len());
        let mut by_freq: Vec<_> = count.iter().collect();
        by_freq.sort_by(|a, b| b.1.cmp(a.1));
        assert_eq!(by_freq[0].0, "product_viewed");
    }

    /// JSON kind of a value, for schema checks.
    fn kind_of(v: &Value) -> &'static str {
        match v {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(n) if n.is_f64() => "float",
            Value::Number(_) => "int",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }

    /// What the attributes of a run look like.
    struct Stats {
        /// JSON kinds seen per (type, field).
        kinds: HashMap<(String, String), HashSet<&'static str>>,
        /// (type, field) pairs first seen in the second half of the run.
        late: usize,
        /// Lines with `links` or `data.relationships`.
        extras: usize,
        /// Empty object or array attributes.
        empties: usize,
    }

    fn schema_stats(buf: &[u8]) -> Stats {
        let all = lines(buf);
        let half = all.len() / 2;
        let mut st = Stats { kinds: HashMap::new(), late: 0, extras: 0, empties: 0 };
        let mut first_half: HashSet<(String, String)> = HashSet::new();
        let mut late: HashSet<(String, String)> = HashSet::new();
        for (n, l) in all.iter().enumerate() {
            let v: Value = serde_json::from_str(l).expect("valid");
            let t = v["data"]["type"].as_str().expect("type");
            if v.get("links").is_some() || v["data"].get("relationships").is_some() {
                st.extras += 1;
            }
            for (k, val) in v["data"]["attributes"].as_object().expect("attributes") {
                let key = (t.to_owned(), k.clone());
                if n < half {
                    first_half.insert(key.clone());
                } else if !first_half.contains(&key) {
                    late.insert(key.clone());
                }
                if val.as_object().is_some_and(|o| o.is_empty()) || val.as_array().is_some_and(|a| a.is_empty()) {
                    st.empties += 1;
                }
                st.kinds.entry(key).or_default().insert(kind_of(val));
            }
        }
        st.late = late.len();
        st
    }

    #[test]
    fn evolution_and_conflicts() {
        let o = opts(30_000, 21);
        let (buf, _) = run(&o);
        let st = schema_stats(&buf);
        let conflicting = st.kinds.values().filter(|k| k.iter().filter(|k| **k != "null").count() > 1).count();
        let nulls = st.kinds.values().filter(|k| k.contains("null")).count();
        assert!(conflicting >= 2, "{conflicting}");
        assert!(nulls > 0);
        assert!(st.extras > 0);
        assert!(st.empties > 0);
        let text = std::str::from_utf8(&buf).expect("utf8");
        assert!(text.contains("\\u00e9") && text.contains("\\\"quoted\\\""));

        let (buf, _) = run(&GenOptions { evolve: false, ..o });
        let fixed = schema_stats(&buf);
        // Rare optional fields of rare types also show up late; evolution adds many more.
        assert!(st.late > fixed.late + 5, "{} vs {}", st.late, fixed.late);
        assert!(fixed.kinds.values().all(|k| k.len() == 1), "a field changed kinds without evolve");
        assert_eq!(fixed.extras, 0);
        assert_eq!(fixed.empties, 0);
    }

    #[test]
    fn few_types_and_tiny_spaces() {
        let o = GenOptions { types: 3, users: 1, products: 1, span_ms: 0, bad_ratio: 0.5, ..opts(2000, 1) };
        let (buf, s) = run(&o);
        assert_eq!(lines(&buf).len(), 2000);
        let types: HashSet<String> = lines(&buf)
            .iter()
            .filter(|l| classify(l).is_none())
            .map(|l| serde_json::from_str::<Value>(l).expect("valid")["data"]["type"].as_str().expect("t").to_owned())
            .collect();
        assert!(types.len() <= BUSINESS.len());
        assert_eq!(s.valid + s.invalid, 2000);
    }

    #[test]
    fn write_errors_propagate() {
        struct Failing;
        impl Write for Failing {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        assert!(generate(&opts(10, 1), &mut Failing).is_err());
    }

    #[test]
    fn escaping_round_trips() {
        for s in TRICKY {
            let mut a = String::new();
            push_json_str(&mut a, s);
            assert_eq!(serde_json::from_str::<String>(&a).expect("json"), s);
            let mut b = String::new();
            push_json_str_ascii(&mut b, s);
            assert!(b.is_ascii());
            assert_eq!(serde_json::from_str::<String>(&b).expect("json"), s);
        }
    }
}
