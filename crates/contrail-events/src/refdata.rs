//! Reference data: the airports and carriers of the simulated market and of validation.
//!
//! Coordinates are the airports' published reference points, rounded to 0.01°.

/// An airport: IATA code, city, ISO country, latitude, longitude, and a size class
/// (3 = global hub, 2 = large, 1 = regional) that scales its traffic.
#[derive(Debug, Clone, Copy)]
pub struct Airport {
    pub code: &'static str,
    pub city: &'static str,
    pub country: &'static str,
    pub lat: f64,
    pub lon: f64,
    pub size: u8,
}

const fn ap(
    code: &'static str,
    city: &'static str,
    country: &'static str,
    lat: f64,
    lon: f64,
    size: u8,
) -> Airport {
    Airport {
        code,
        city,
        country,
        lat,
        lon,
        size,
    }
}

pub static AIRPORTS: &[Airport] = &[
    ap("ATL", "Atlanta", "US", 33.64, -84.43, 3),
    ap("LAX", "Los Angeles", "US", 33.94, -118.41, 3),
    ap("ORD", "Chicago", "US", 41.97, -87.91, 3),
    ap("DFW", "Dallas", "US", 32.90, -97.04, 3),
    ap("DEN", "Denver", "US", 39.86, -104.67, 2),
    ap("JFK", "New York", "US", 40.64, -73.78, 3),
    ap("SFO", "San Francisco", "US", 37.62, -122.38, 2),
    ap("SEA", "Seattle", "US", 47.45, -122.31, 2),
    ap("MIA", "Miami", "US", 25.80, -80.29, 2),
    ap("BOS", "Boston", "US", 42.37, -71.01, 2),
    ap("LAS", "Las Vegas", "US", 36.08, -115.15, 2),
    ap("MCO", "Orlando", "US", 28.43, -81.31, 2),
    ap("YYZ", "Toronto", "CA", 43.68, -79.63, 2),
    ap("YVR", "Vancouver", "CA", 49.19, -123.18, 1),
    ap("MEX", "Mexico City", "MX", 19.44, -99.07, 2),
    ap("CUN", "Cancun", "MX", 21.04, -86.88, 1),
    ap("GRU", "Sao Paulo", "BR", -23.43, -46.47, 2),
    ap("LHR", "London", "GB", 51.47, -0.45, 3),
    ap("LGW", "London", "GB", 51.15, -0.19, 1),
    ap("CDG", "Paris", "FR", 49.01, 2.55, 3),
    ap("AMS", "Amsterdam", "NL", 52.31, 4.76, 3),
    ap("FRA", "Frankfurt", "DE", 50.03, 8.56, 3),
    ap("MUC", "Munich", "DE", 48.35, 11.79, 2),
    ap("MAD", "Madrid", "ES", 40.47, -3.56, 2),
    ap("BCN", "Barcelona", "ES", 41.30, 2.08, 2),
    ap("FCO", "Rome", "IT", 41.80, 12.25, 2),
    ap("ZRH", "Zurich", "CH", 47.46, 8.55, 2),
    ap("VIE", "Vienna", "AT", 48.11, 16.57, 1),
    ap("CPH", "Copenhagen", "DK", 55.62, 12.66, 1),
    ap("DUB", "Dublin", "IE", 53.42, -6.27, 1),
    ap("LIS", "Lisbon", "PT", 38.77, -9.13, 1),
    ap("IST", "Istanbul", "TR", 41.26, 28.74, 3),
    ap("DXB", "Dubai", "AE", 25.25, 55.36, 3),
    ap("DOH", "Doha", "QA", 25.27, 51.61, 2),
    ap("DEL", "Delhi", "IN", 28.56, 77.10, 2),
    ap("BOM", "Mumbai", "IN", 19.09, 72.87, 2),
    ap("SIN", "Singapore", "SG", 1.36, 103.99, 3),
    ap("HKG", "Hong Kong", "HK", 22.31, 113.91, 3),
    ap("BKK", "Bangkok", "TH", 13.69, 100.75, 2),
    ap("NRT", "Tokyo", "JP", 35.76, 140.39, 2),
    ap("HND", "Tokyo", "JP", 35.55, 139.78, 3),
    ap("ICN", "Seoul", "KR", 37.46, 126.44, 2),
    ap("PEK", "Beijing", "CN", 40.08, 116.58, 3),
    ap("PVG", "Shanghai", "CN", 31.14, 121.81, 2),
    ap("SYD", "Sydney", "AU", -33.95, 151.18, 2),
    ap("MEL", "Melbourne", "AU", -37.67, 144.84, 1),
    ap("AKL", "Auckland", "NZ", -37.01, 174.79, 1),
    ap("JNB", "Johannesburg", "ZA", -26.14, 28.24, 1),
];

/// A carrier: IATA code, name, home country, and a price-quality factor (1.0 = market
/// average; full-service carriers above, low-cost carriers below).
#[derive(Debug, Clone, Copy)]
pub struct Carrier {
    pub code: &'static str,
    pub name: &'static str,
    pub country: &'static str,
    pub price_factor: f64,
}

const fn cr(
    code: &'static str,
    name: &'static str,
    country: &'static str,
    price_factor: f64,
) -> Carrier {
    Carrier {
        code,
        name,
        country,
        price_factor,
    }
}

pub static CARRIERS: &[Carrier] = &[
    cr("AA", "American Airlines", "US", 1.00),
    cr("DL", "Delta Air Lines", "US", 1.05),
    cr("UA", "United Airlines", "US", 1.00),
    cr("WN", "Southwest Airlines", "US", 0.80),
    cr("B6", "JetBlue", "US", 0.85),
    cr("AC", "Air Canada", "CA", 1.00),
    cr("BA", "British Airways", "GB", 1.10),
    cr("AF", "Air France", "FR", 1.05),
    cr("KL", "KLM", "NL", 1.00),
    cr("LH", "Lufthansa", "DE", 1.08),
    cr("IB", "Iberia", "ES", 0.95),
    cr("FR", "Ryanair", "IE", 0.60),
    cr("U2", "easyJet", "GB", 0.65),
    cr("TK", "Turkish Airlines", "TR", 0.92),
    cr("EK", "Emirates", "AE", 1.12),
    cr("QR", "Qatar Airways", "QA", 1.10),
    cr("SQ", "Singapore Airlines", "SG", 1.15),
    cr("CX", "Cathay Pacific", "HK", 1.08),
    cr("NH", "All Nippon Airways", "JP", 1.06),
    cr("QF", "Qantas", "AU", 1.05),
];

/// Currencies accepted in events (ISO 4217). The simulator quotes in USD.
pub static CURRENCIES: &[&str] = &[
    "USD", "EUR", "GBP", "CAD", "JPY", "AUD", "CHF", "SGD", "AED", "INR",
];

fn alpha3(code: &str) -> Option<usize> {
    match code.as_bytes() {
        [a, b, c] if a.is_ascii_uppercase() && b.is_ascii_uppercase() && c.is_ascii_uppercase() => {
            Some(((a - b'A') as usize * 26 + (b - b'A') as usize) * 26 + (c - b'A') as usize)
        }
        _ => None,
    }
}

fn alnum(c: u8) -> Option<usize> {
    match c {
        b'A'..=b'Z' => Some((c - b'A') as usize),
        b'0'..=b'9' => Some(26 + (c - b'0') as usize),
        _ => None,
    }
}

fn alnum2(code: &str) -> Option<usize> {
    match code.as_bytes() {
        [a, b] => Some(alnum(*a)? * 36 + alnum(*b)?),
        _ => None,
    }
}

/// Direct-indexed lookup tables (the validator looks codes up for every row).
struct Tables {
    airports: Vec<u8>,
    carriers: Vec<u8>,
    countries: Vec<Option<&'static str>>,
}

fn tables() -> &'static Tables {
    static T: std::sync::OnceLock<Tables> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let mut t = Tables {
            airports: vec![u8::MAX; 26 * 26 * 26],
            carriers: vec![u8::MAX; 36 * 36],
            countries: vec![None; 36 * 36],
        };
        for (i, a) in AIRPORTS.iter().enumerate() {
            if let Some(k) = alpha3(a.code) {
                t.airports[k] = i as u8;
            }
            if let Some(k) = alnum2(a.country) {
                t.countries[k] = Some(a.country);
            }
        }
        for (i, c) in CARRIERS.iter().enumerate() {
            if let Some(k) = alnum2(c.code) {
                t.carriers[k] = i as u8;
            }
            if let Some(k) = alnum2(c.country) {
                t.countries[k] = Some(c.country);
            }
        }
        t
    })
}

pub fn airport_index(code: &str) -> Option<usize> {
    let i = tables().airports[alpha3(code)?];
    (i != u8::MAX).then_some(i as usize)
}

pub fn airport(code: &str) -> Option<&'static Airport> {
    airport_index(code).map(|i| &AIRPORTS[i])
}

pub fn carrier_index(code: &str) -> Option<usize> {
    let i = tables().carriers[alnum2(code)?];
    (i != u8::MAX).then_some(i as usize)
}

/// The interned ISO 3166 alpha-2 code, if a known airport or carrier uses it.
pub fn country(code: &str) -> Option<&'static str> {
    tables().countries[alnum2(code)?]
}

/// True if `code` is an ISO 3166 alpha-2 country used by an airport or carrier.
pub fn known_country(code: &str) -> bool {
    country(code).is_some()
}

/// Great-circle distance in kilometres (haversine, mean Earth radius 6371.0088 km).
pub fn great_circle_km(a: &Airport, b: &Airport) -> f64 {
    haversine_km(a.lat, a.lon, b.lat, b.lon)
}

pub fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0088 * h.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_well_formed() {
        for (i, a) in AIRPORTS.iter().enumerate() {
            assert_eq!(a.code.len(), 3);
            assert!(a.code.bytes().all(|c| c.is_ascii_uppercase()));
            assert_eq!(airport_index(a.code), Some(i));
        }
        for (i, c) in CARRIERS.iter().enumerate() {
            assert_eq!(c.code.len(), 2);
            assert_eq!(carrier_index(c.code), Some(i));
            assert_eq!(country(c.country), Some(c.country));
        }
        for bad in ["", "jfk", "JF", "JFKX", "ZZZ", "Z9", "é"] {
            assert_eq!(airport_index(bad), None);
            assert_eq!(carrier_index(bad), None);
        }
        assert_eq!(country("XX"), None);
    }

    #[test]
    fn distances() {
        let (jfk, lhr) = (airport("JFK"), airport("LHR"));
        let d = jfk
            .zip(lhr)
            .map(|(a, b)| great_circle_km(a, b))
            .unwrap_or(0.0);
        assert!((d - 5540.0).abs() < 30.0, "JFK-LHR {d}");
    }
}
