//! The market model: routes, carriers, fares and shoppers, with known truth.
//! docs/simulator.md describes every formula here; keep the two in step.

use contrail_events::calendar;
use contrail_events::refdata::{self, AIRPORTS, CARRIERS};
use contrail_events::{Cabin, Channel, Event};

use crate::rng::{mix, Rng};

/// One carrier's service on a route.
#[derive(Debug, Clone)]
pub struct Service {
    pub carrier: usize,
    pub stops: u8,
    pub duration_min: u32,
    /// Share of the route's searches that show this carrier.
    pub share: f64,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub id: usize,
    pub origin: usize,
    pub destination: usize,
    pub distance_km: f64,
    /// Relative search volume (product of the airports' sizes, times a random factor).
    pub weight: f64,
    pub services: Vec<Service>,
    /// The economy one-way, nonstop, mid-horizon reference fare in USD.
    pub base_fare: f64,
}

/// The whole market for one seed.
#[derive(Debug, Clone)]
pub struct Market {
    pub seed: u64,
    pub routes: Vec<Route>,
}

fn same_city(a: usize, b: usize) -> bool {
    AIRPORTS[a].city == AIRPORTS[b].city
}

impl Market {
    /// Draws `n_routes` distinct routes. Airports are picked in proportion to their size
    /// class squared; carriers from the two end countries are preferred, and long routes
    /// without a home carrier are flown with one stop.
    pub fn new(seed: u64, n_routes: usize) -> Market {
        let mut rng = Rng::derive(&[seed, 0xA1_2_F0]);
        let w: Vec<f64> = AIRPORTS.iter().map(|a| (a.size as f64).powi(2)).collect();
        let n_air = AIRPORTS.len();
        let max_routes = (0..n_air * n_air)
            .filter(|k| k / n_air != k % n_air && !same_city(k / n_air, k % n_air))
            .count();
        let n_routes = n_routes.min(max_routes);
        let mut routes: Vec<Route> = Vec::with_capacity(n_routes);
        let mut tries = 0usize;
        while routes.len() < n_routes {
            tries += 1;
            let (o, d) = if tries > 100_000 {
                // Dense request: walk pairs in order to finish deterministically.
                let k = tries - 100_000;
                (k / AIRPORTS.len() % AIRPORTS.len(), k % AIRPORTS.len())
            } else {
                (rng.weighted(&w), rng.weighted(&w))
            };
            if o == d
                || same_city(o, d)
                || routes.iter().any(|r| r.origin == o && r.destination == d)
            {
                continue;
            }
            let (a, b) = (&AIRPORTS[o], &AIRPORTS[d]);
            let distance_km = refdata::great_circle_km(a, b);
            // Carriers: home carriers of either end, plus one foreign carrier for reach.
            let mut cands: Vec<usize> = (0..CARRIERS.len())
                .filter(|&c| CARRIERS[c].country == a.country || CARRIERS[c].country == b.country)
                .collect();
            let extra = rng.below(CARRIERS.len() as u64) as usize;
            if !cands.contains(&extra) {
                cands.push(extra);
            }
            // Keep at most three, drawn without replacement.
            while cands.len() > 3 {
                let i = rng.below(cands.len() as u64) as usize;
                cands.remove(i);
            }
            let mut services = Vec::new();
            let n = cands.len() as f64;
            for &c in &cands {
                let home = CARRIERS[c].country == a.country || CARRIERS[c].country == b.country;
                let stops = if home || distance_km < 1500.0 {
                    0
                } else if distance_km < 9000.0 {
                    1
                } else {
                    1 + rng.below(2) as u8
                };
                let flight_min = distance_km / 820.0 * 60.0 + 35.0;
                let duration_min =
                    (flight_min + stops as f64 * (95.0 + rng.uniform(0.0, 90.0))).round() as u32;
                services.push(Service {
                    carrier: c,
                    stops,
                    duration_min: duration_min.clamp(30, 3900),
                    share: if home { 1.5 } else { 1.0 } / n,
                });
            }
            let total: f64 = services.iter().map(|s| s.share).sum();
            for s in &mut services {
                s.share /= total;
            }
            let base_fare = 40.0 + 0.06 * distance_km + 60.0 * (distance_km / 1000.0).sqrt();
            let weight = (a.size as f64 * b.size as f64) * rng.uniform(0.6, 1.4);
            routes.push(Route {
                id: routes.len(),
                origin: o,
                destination: d,
                distance_km,
                weight,
                services,
                base_fare,
            });
        }
        Market { seed, routes }
    }
}

/// Share of a day's searches in each UTC hour (sums to 1).
pub const DIURNAL: [f64; 24] = {
    let raw = [
        0.8, 0.5, 0.35, 0.3, 0.3, 0.45, 0.8, 1.3, 1.7, 1.9, 2.0, 2.0, 1.95, 1.9, 1.9, 1.95, 2.0,
        2.05, 2.1, 2.2, 2.2, 1.9, 1.5, 1.1,
    ];
    let mut sum = 0.0;
    let mut i = 0;
    while i < 24 {
        sum += raw[i];
        i += 1;
    }
    let mut out = [0.0; 24];
    let mut j = 0;
    while j < 24 {
        out[j] = raw[j] / sum;
        j += 1;
    }
    out
};

/// Search volume by weekday of the search (Monday first).
pub const SEARCH_DOW: [f64; 7] = [1.12, 1.08, 1.02, 1.0, 0.95, 0.88, 0.95];
/// Fare multiplier by weekday of departure (Monday first).
pub const DEPARTURE_DOW: [f64; 7] = [0.98, 0.92, 0.92, 1.0, 1.12, 1.0, 1.10];
/// Fare multiplier by month of departure.
pub const SEASON: [f64; 12] = [
    0.90, 0.88, 0.97, 1.0, 1.02, 1.12, 1.22, 1.20, 0.98, 0.95, 0.92, 1.15,
];
/// Search volume by month of the search.
pub const SEARCH_SEASON: [f64; 12] = [
    1.05, 1.0, 1.05, 1.0, 1.0, 0.95, 0.9, 0.85, 0.95, 1.0, 1.0, 0.9,
];

pub fn cabin_multiplier(c: Cabin) -> f64 {
    match c {
        Cabin::Economy => 1.0,
        Cabin::PremiumEconomy => 1.75,
        Cabin::Business => 4.2,
        Cabin::First => 7.5,
    }
}

/// Fare multiplier over days to departure: cheapest 3–8 weeks out, rising steeply in the
/// last two weeks, slightly higher again far out.
pub fn booking_curve(dtd: f64) -> f64 {
    0.86 + 1.05 * (-dtd / 12.0).exp() + 0.12 * (1.0 - (-(dtd / 150.0).powi(2)).exp())
}

/// Share of a flight's seats sold at `dtd` days out, for a flight that departs with load
/// factor `final_lf`. Seats sell down along a concave curve over the last 330 days.
pub fn load_factor(dtd: f64, final_lf: f64) -> f64 {
    let x = (dtd / 330.0).clamp(0.0, 1.0);
    final_lf * (1.0 - x.powf(0.55))
}

/// Fare multiplier from scarcity: as the cabin fills, cheaper fare classes close.
pub fn scarcity(lf: f64) -> f64 {
    1.0 + 0.55 * lf.powi(3)
}

/// Multiplier near holidays (departures within a few days of one cost more).
pub fn holiday_effect(days_to_holiday: u32) -> f64 {
    1.0 + 0.15 * (-(days_to_holiday as f64) / 3.0).exp()
}

/// What the simulator knows that the shopper's event does not say.
#[derive(Debug, Clone, Copy)]
pub struct Truth {
    /// The expected price of this itinerary (before the quote's noise and any anomaly).
    pub expected_fare: f64,
    /// The probability that this shopper books it, from the choice model.
    pub booking_prob: f64,
    pub is_anomaly: bool,
}

/// Per-flight state that is a pure function of the flight, so any partition can be
/// generated alone (and in parallel) and still agree with every other partition.
fn flight_final_lf(seed: u64, route: usize, carrier: usize, dep: i32, cabin: Cabin) -> f64 {
    let h = mix(seed
        ^ mix(route as u64)
        ^ mix((carrier as u64) << 20)
        ^ mix((dep as i64 as u64) << 8)
        ^ cabin as u64);
    0.68 + 0.32 * ((h >> 11) as f64 / (1u64 << 53) as f64)
}

fn capacity(carrier: usize, cabin: Cabin) -> u32 {
    let f = CARRIERS[carrier].price_factor;
    let base = cabin.typical_capacity() as f64;
    // Low-cost carriers fly denser economy cabins; full-service ones larger premium cabins.
    (match cabin {
        Cabin::Economy => base * (1.35 - 0.35 * f),
        _ => base * f,
    })
    .round()
    .max(4.0) as u32
}

/// Generates one search on `route` at instant `ts`.
pub fn search(
    rng: &mut Rng,
    market: &Market,
    route: &Route,
    ts: i64,
    anomaly_rate: f64,
) -> (Event, Truth) {
    let day = ts.div_euclid(86_400) as i32;
    // Segment: business travellers search close in, leisure travellers far ahead.
    let business = rng.bernoulli(0.32);
    let dtd = if business {
        rng.exp(6.0)
    } else {
        rng.exp(22.0) + rng.exp(22.0)
    };
    let dtd_days = (dtd.floor() as i32).min(330);
    let departure_date = day + dtd_days;
    let round_trip = rng.bernoulli(if business { 0.55 } else { 0.68 });
    let stay = if business {
        1 + rng.below(4) as i32
    } else {
        2 + rng.exp(6.0).floor().min(28.0) as i32
    };
    let return_date = round_trip.then_some(departure_date + stay);

    let cabin = Cabin::ALL[rng.weighted(if business {
        &[0.62, 0.08, 0.26, 0.04]
    } else {
        &[0.88, 0.07, 0.04, 0.01]
    })];
    let shares: Vec<f64> = route.services.iter().map(|s| s.share).collect();
    let svc = &route.services[rng.weighted(&shares)];
    let carrier = svc.carrier;

    let cap = capacity(carrier, cabin);
    let final_lf = flight_final_lf(market.seed, route.id, carrier, departure_date, cabin);
    let lf = load_factor(dtd_days as f64, final_lf);
    let seats_remaining = ((cap as f64) * (1.0 - lf)).round().max(0.0) as u32;
    let classes = cabin.fare_classes();
    let open = ((lf * classes.len() as f64).floor() as usize).min(classes.len() - 1);
    let fare_class = classes[classes.len() - 1 - open];

    let dep_dow = calendar::weekday(departure_date) as usize;
    let (_, dep_month, _) = calendar::civil_from_days(departure_date);
    let holiday = holiday_effect(calendar::days_to_nearest_holiday(departure_date));
    let stops_discount = 1.0 - 0.12 * svc.stops as f64;
    let rt_mult = if round_trip { 1.85 } else { 1.0 };
    let expected = route.base_fare
        * CARRIERS[carrier].price_factor
        * cabin_multiplier(cabin)
        * rt_mult
        * booking_curve(dtd)
        * DEPARTURE_DOW[dep_dow]
        * SEASON[dep_month as usize - 1]
        * holiday
        * scarcity(lf)
        * stops_discount;
    let sigma = 0.07;
    let mut price = expected * (sigma * rng.normal() - sigma * sigma / 2.0).exp();
    let is_anomaly = rng.bernoulli(anomaly_rate);
    if is_anomaly {
        // Error fares: mostly a missing digit or a wrong currency (far too cheap), some
        // fat-finger fares far too dear.
        price *= if rng.bernoulli(0.85) {
            rng.uniform(0.05, 0.3)
        } else {
            rng.uniform(5.0, 12.0)
        };
    }
    let price = (price * 100.0).round().max(1.0) / 100.0;

    // Competitors follow the market with their own noise; 6% of quotes have none.
    let competitor_price = (!rng.bernoulli(0.06)).then(|| {
        let c = expected
            * (0.12 * rng.normal() - 0.0072).exp()
            * if svc.stops > 0 { 1.04 } else { 0.98 };
        (c * 100.0).round().max(1.0) / 100.0
    });

    let passengers = [1u32, 1, 1, 1, 1, 1, 1, 2, 2, 3][rng.below(10) as usize]
        + if rng.bernoulli(0.03) { 1 } else { 0 };
    let channel = Channel::ALL[rng.weighted(&[0.45, 0.30, 0.10, 0.15])];
    let o = &AIRPORTS[route.origin];
    let d = &AIRPORTS[route.destination];
    let point_of_sale = match rng.weighted(&[0.8, 0.15, 0.05]) {
        0 => o.country,
        1 => d.country,
        _ => AIRPORTS[rng.below(AIRPORTS.len() as u64) as usize].country,
    };

    // Choice model: the shopper books this offer, the competitor's, or neither
    // (multinomial logit). Leisure shoppers are about three times as price sensitive.
    let beta = if business { 1.6 } else { 4.5 };
    let level = expected / (route.base_fare * cabin_multiplier(cabin) * rt_mult);
    let channel_u = match channel {
        Channel::Web => 0.0,
        Channel::Mobile => -0.25,
        Channel::Agency => 0.45,
        Channel::Metasearch => -0.55,
    };
    let u_own =
        channel_u - beta * (price / expected).ln() - 0.6 * level.ln() - 0.35 * svc.stops as f64
            + 0.3 * (CARRIERS[carrier].price_factor - 1.0);
    let u_none = 2.9 - 0.04 * (dtd_days.min(30) as f64 - 30.0) - if business { 0.6 } else { 0.0 };
    let e_own = u_own.exp();
    let e_comp = competitor_price.map_or(0.0, |c| {
        (-beta * (c / expected).ln() - 0.6 * level.ln()).exp()
    });
    let booking_prob = e_own / (e_own + e_comp + u_none.exp());
    let booked = rng.bernoulli(booking_prob);

    let event = Event {
        event_id: String::new(),
        search_ts: ts,
        origin: o.code,
        destination: d.code,
        departure_date,
        return_date,
        carrier: CARRIERS[carrier].code,
        cabin,
        fare_class,
        stops: svc.stops,
        duration_min: svc.duration_min,
        price,
        currency: "USD",
        competitor_price,
        seats_remaining,
        channel,
        point_of_sale,
        passengers,
        booked,
    };
    (
        event,
        Truth {
            expected_fare: expected,
            booking_prob,
            is_anomaly,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_distinct_and_valid() {
        let m = Market::new(1, 200);
        assert_eq!(m.routes.len(), 200);
        for (i, r) in m.routes.iter().enumerate() {
            assert_ne!(r.origin, r.destination);
            assert!(!r.services.is_empty() && r.services.len() <= 3);
            assert!((r.services.iter().map(|s| s.share).sum::<f64>() - 1.0).abs() < 1e-9);
            assert!(m.routes[..i]
                .iter()
                .all(|q| (q.origin, q.destination) != (r.origin, r.destination)));
        }
        // Every route a market of this size can hold.
        let n = AIRPORTS.len();
        let valid = (0..n * n)
            .filter(|k| k / n != k % n && !same_city(k / n, k % n))
            .count();
        assert_eq!(Market::new(1, 100_000).routes.len(), valid);
    }

    #[test]
    fn curves_have_their_shape() {
        assert!(booking_curve(1.0) > booking_curve(14.0));
        assert!(booking_curve(40.0) < booking_curve(300.0));
        assert!(load_factor(0.0, 0.9) > load_factor(100.0, 0.9));
        assert!((load_factor(0.0, 0.9) - 0.9).abs() < 1e-12);
    }
}
