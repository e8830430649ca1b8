//! `attestor incidents`: the caller's tenant's incidents from the command line (part of the
//! binary only). Listing and showing need any certificate of the tenant; acknowledging and
//! resolving need an operator's (`.../operator/<name>`).

use std::process::ExitCode;

use clap::Subcommand;

use attestor_agent::client::LedgerClient;
use attestor_agent::config::LedgerConnection;
use attestor_net::tls;
use attestor_verify::api::Incident;

#[derive(Subcommand)]
pub(crate) enum IncidentsCommand {
    /// Incidents of your tenant, oldest first.
    List {
        /// open, acknowledged, resolved or unresolved [default: all].
        #[arg(long)]
        state: Option<String>,
        /// Only those not resolved before this time (Unix ms).
        #[arg(long)]
        since_ms: Option<u64>,
    },
    /// One incident, with who acknowledged and resolved it and what the actions did.
    Show { id: u64 },
    /// Take an open incident (operator certificate).
    Ack {
        id: u64,
        /// Why, for the log.
        #[arg(long)]
        reason: String,
    },
    /// Close an incident (operator certificate).
    Resolve {
        id: u64,
        /// Why, for the log.
        #[arg(long)]
        reason: String,
    },
}

pub(crate) async fn run(
    connection: &LedgerConnection,
    what: IncidentsCommand,
    json: bool,
) -> Result<ExitCode, String> {
    let files = &connection.tls;
    let tls = tls::client_config(&files.ca, &files.cert, &files.key).map_err(|e| e.to_string())?;
    let client = LedgerClient::new(&connection.endpoint, tls).map_err(|e| e.to_string())?;
    let fail = |e: attestor_agent::client::ClientError| e.to_string();
    let incidents = match what {
        IncidentsCommand::List { state, since_ms } => {
            let query: Vec<String> = [
                state.map(|s| format!("state={s}")),
                since_ms.map(|s| format!("since_ms={s}")),
            ]
            .into_iter()
            .flatten()
            .collect();
            client
                .incidents(&query.join("&"))
                .await
                .map_err(fail)?
                .incidents
        }
        IncidentsCommand::Show { id } => vec![client.incident(id).await.map_err(fail)?],
        IncidentsCommand::Ack { id, reason } => {
            vec![client
                .change_incident(id, false, &reason)
                .await
                .map_err(fail)?]
        }
        IncidentsCommand::Resolve { id, reason } => {
            vec![client
                .change_incident(id, true, &reason)
                .await
                .map_err(fail)?]
        }
    };
    if json {
        let text = serde_json::to_string_pretty(&incidents).map_err(|e| e.to_string())?;
        outln!("{text}")?;
    } else {
        print_table(&incidents)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(incidents: &[Incident]) -> Result<(), String> {
    outln!(
        "{:>6} {:<24} {:<20} {:<13} {:>14} {:<11} {:<24} SUMMARY",
        "ID",
        "KIND",
        "AGENT",
        "STATE",
        "OPENED (ms)",
        "EVIDENCE",
        "LAST ACTION"
    )?;
    for i in incidents {
        let evidence = match (i.first_index, i.last_index) {
            (Some(first), Some(last)) if first != last => format!("{first}..{last}"),
            (Some(first), _) => first.to_string(),
            _ => "-".into(),
        };
        let action = i.actions.last().map_or("-".to_string(), |a| {
            format!("{} {}", if a.ok { "ok" } else { "FAILED" }, a.action)
        });
        outln!(
            "{:>6} {:<24} {:<20} {:<13} {:>14} {:<11} {:<24} {}",
            i.id,
            i.kind.name(),
            i.agent_id,
            i.state.name(),
            i.opened_at_ms,
            evidence,
            action,
            i.summary
        )?;
        for (what, change) in [("acknowledged", &i.acknowledged), ("resolved", &i.resolved)] {
            if let Some(c) = change {
                outln!(
                    "{:>6} {what} by {} at {} ms: {}",
                    "",
                    c.by,
                    c.at_ms,
                    c.reason
                )?;
            }
        }
    }
    Ok(())
}
