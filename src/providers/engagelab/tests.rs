use rust_decimal::Decimal;

use super::sim::{EngageLabSim, SimAccount};
use super::*;
use crate::providers::fuzz;
use crate::sim::{Fault, Ledger, SimHandler};

/// Answers of the SMS and OTP simulators: balances, an auth error, a garbled body.
fn sim_answers() -> Vec<Vec<u8>> {
    fuzz::block_on(async {
        let mut out = Vec::new();
        for product in [Product::Sms, Product::Otp] {
            let sim = EngageLabSim::new(product);
            sim.add_account(
                "key",
                SimAccount::new(
                    "secret",
                    Ledger::fixed(Decimal::new(8_979_938_812, 4)),
                    Ledger::fixed(Decimal::new(125, 1)),
                ),
            );
            // "key:secret" and "key:wrong" in base64.
            let ask = |auth: &str| {
                fuzz::sim_request(
                    "GET",
                    "/v1/balance",
                    None,
                    &[("authorization", auth)],
                    vec![],
                )
            };
            let good = ask("Basic a2V5OnNlY3JldA==");
            out.push(fuzz::answer_body(sim.handle(&good).await, 200));
            out.push(fuzz::answer_body(
                sim.handle(&ask("Basic a2V5Ondyb25n")).await,
                401,
            ));
            sim.update("key", |a| a.faults.next(Fault::Malformed, 1));
            out.push(fuzz::answer_body(sim.handle(&good).await, 200));
        }
        out
    })
}

#[test]
fn the_parsers_never_panic_on_arbitrary_or_mutated_answers() {
    let seeds = sim_answers();
    let first = fuzz::response(200, &seeds[0], &[]);
    assert_eq!(
        parse_sms(&first, "USD").unwrap().balances[0].amount,
        Decimal::new(8_979_938_812, 4),
        "the seeds are real answers"
    );
    fuzz::check(seeds, |status, body| {
        let response = fuzz::response(status, body, &[("retry-after", "7")]);
        let _ = parse_sms(&response, "USD");
        let _ = parse_otp(&response);
    });
}
