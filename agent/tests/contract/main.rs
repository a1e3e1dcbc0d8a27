//! Where the operator and the agent meet, tested with both crates' own code: what the operator renders is
//! what the agent parses ([`env`]), and every rule of the API is the same rule in the CRD schema, the
//! operator's validation and the agent's parsers ([`checked`]).

mod checked;
mod env;
mod pod;
