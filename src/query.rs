//! `attestor query` and `attestor gate`: the ledger from the command line (part of the
//! binary only).
//! With `--log-key`, every entry's inclusion proof and signed checkpoint are verified
//! before anything is printed, and a failing proof makes the command fail. The pinned key
//! may be an older one: the ledger's key transitions are followed from it (each signed by
//! the old and the new key), and every checkpoint must be signed by a key of that chain
//! within the key's period.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use attestor_agent::client::{ClientError, LedgerClient};
use attestor_agent::config::LedgerConnection;
use attestor_net::tls;
use attestor_verify::api::EntryJson;
use attestor_verify::audit;
use attestor_verify::ear::{self, Jwks};
use attestor_verify::gate::{evaluate, Fleet};
use attestor_verify::log::checkpoint::{Checkpoint, NoteVerifier};
use attestor_verify::log::keys::KeyHistory;
use attestor_verify::log::witness::cosigned_by;

use crate::{LedgerArgs, QueryCommand};

pub(crate) fn client_of(connection: &LedgerConnection) -> Result<LedgerClient, String> {
    let files = &connection.tls;
    let tls = tls::client_config(&files.ca, &files.cert, &files.key).map_err(|e| e.to_string())?;
    LedgerClient::new(&connection.endpoint, tls).map_err(|e| e.to_string())
}

/// Runs the release gate; exit 0 pass, 1 fail.
pub(crate) async fn gate(
    connection: &LedgerConnection,
    tenant: Option<String>,
    only: &[String],
    max_age: Duration,
    format: &str,
) -> Result<ExitCode, String> {
    let client = client_of(connection)?;
    let fail = |e: ClientError| e.to_string();
    let expected = client.tenant().await.map_err(fail)?;
    if let Some(asked) = tenant {
        if asked != expected.tenant {
            return Err(format!(
                "--tenant {asked} but the client certificate is of tenant {}",
                expected.tenant
            ));
        }
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let window_start_ms =
        now_ms.saturating_sub(u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX));
    let agents = client.agents().await.map_err(fail)?.agents;
    let latest = client.latest_healthy().await.map_err(fail)?.entries;
    let mut incidents = client
        .incidents("state=unresolved")
        .await
        .map_err(fail)?
        .incidents;
    incidents.extend(
        client
            .incidents(&format!("state=resolved&since_ms={window_start_ms}"))
            .await
            .map_err(fail)?
            .incidents,
    );
    let mut refused = Vec::new();
    let mut after = None;
    loop {
        let cursor = after.map(|a| format!("&after={a}")).unwrap_or_default();
        let page = client
            .entries(&format!(
                "verdict=refused&from={window_start_ms}&limit=1000{cursor}"
            ))
            .await
            .map_err(fail)?;
        refused.extend(page.entries);
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let fleet = Fleet {
        tenant: &expected,
        agents: &agents,
        latest_accepted: &latest,
        incidents: &incidents,
        refused: &refused,
    };
    let findings = evaluate(&fleet, only, max_age, now_ms);
    let pass = !findings.is_empty() && findings.iter().all(|f| f.pass);
    match format {
        "json" => outln!(
            "{}",
            to_json(&serde_json::json!({
                "tenant": expected.tenant, "pass": pass, "max_age_seconds": max_age.as_secs(),
                "agents": findings,
            }))?
        )?,
        "table" => {
            outln!("{:<24} {:<6} {:>8}  PROBLEMS", "AGENT", "GATE", "AGE (s)")?;
            for f in &findings {
                outln!(
                    "{:<24} {:<6} {:>8}  {}",
                    f.agent_id,
                    if f.pass { "pass" } else { "FAIL" },
                    f.age_seconds.map_or("-".into(), |a| a.to_string()),
                    f.problems.join("; ")
                )?;
            }
            if findings.is_empty() {
                outln!("no agents to gate on: failing closed")?;
            }
            outln!(
                "gate {} for tenant {}",
                if pass { "PASSED" } else { "FAILED" },
                expected.tenant
            )?;
        }
        other => return Err(format!("--format {other:?}: use table or json")),
    }
    Ok(if pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub(crate) async fn run(
    connection: &LedgerConnection,
    what: QueryCommand,
    args: &LedgerArgs,
) -> Result<ExitCode, String> {
    let client = client_of(connection)?;
    let fail = |e: ClientError| e.to_string();
    let log_key = match &args.log_key {
        Some(path) => {
            let pinned = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            Some(key_history(&client, pinned.trim()).await?)
        }
        None => None,
    };
    match what {
        QueryCommand::Entries {
            agent,
            id,
            verdict,
            from,
            to,
            after,
            limit,
        } => {
            let mut query = vec![format!("limit={limit}")];
            let optional = [
                ("agent", agent),
                ("id", id),
                ("verdict", verdict),
                ("from", from.map(|v| v.to_string())),
                ("to", to.map(|v| v.to_string())),
                ("after", after.map(|v| v.to_string())),
            ];
            query.extend(
                optional
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| format!("{k}={v}"))),
            );
            if log_key.is_some() {
                query.push("proofs=true".into());
            }
            let page = client.entries(&query.join("&")).await.map_err(fail)?;
            let ears = client.ear_jwks().await.map_err(fail)?;
            print_entries(&page.entries, log_key.as_ref(), &ears, args.json)?;
            if let Some(next) = page.next_after {
                eprintln!("more entries: repeat with --after {next}");
            }
        }
        QueryCommand::Entry { index } => {
            let entry = client.entry(index).await.map_err(fail)?;
            let ears = client.ear_jwks().await.map_err(fail)?;
            print_entries(&[entry], log_key.as_ref(), &ears, args.json)?;
        }
        QueryCommand::LatestHealthy => {
            let page = client.latest_healthy().await.map_err(fail)?;
            let ears = client.ear_jwks().await.map_err(fail)?;
            print_entries(&page.entries, log_key.as_ref(), &ears, args.json)?;
        }
        QueryCommand::Agents => {
            let agents = client.agents().await.map_err(fail)?;
            if args.json {
                outln!("{}", to_json(&agents)?)?;
            } else {
                outln!(
                    "{:<24} {:<16} {:<8} {:>14} {:>15}",
                    "AGENT",
                    "TENANT",
                    "HEALTH",
                    "LAST OK (ms)",
                    "ZERO-RETENTION"
                )?;
                for a in &agents.agents {
                    let health = match (a.revoked, a.stale) {
                        (true, _) => "revoked",
                        (false, true) => "STALE",
                        (false, false) => "healthy",
                    };
                    outln!(
                        "{:<24} {:<16} {:<8} {:>14} {:>15}",
                        a.agent_id,
                        a.tenant,
                        health,
                        a.last_accepted_at_ms.map_or("-".into(), |t| t.to_string()),
                        a.zero_retention.map_or("-".into(), |z| z.to_string()),
                    )?;
                }
            }
        }
        QueryCommand::Checkpoint {
            since,
            held,
            witnesses,
            max_witness_lag,
        } => {
            if held.is_some() && log_key.is_none() {
                return Err("--held needs --log-key to verify the checkpoints".into());
            }
            let note = match &log_key {
                Some(key) if !witnesses.is_empty() => {
                    witnessed_checkpoint(&client, key, &witnesses, max_witness_lag).await?
                }
                None if !witnesses.is_empty() => {
                    return Err("--witness needs --log-key to verify the checkpoints".into())
                }
                _ => client.checkpoint(None).await.map_err(fail)?,
            };
            out!("{note}")?;
            if let Some(key) = &log_key {
                let latest = key
                    .open_checkpoint(&note)
                    .map_err(|e| format!("AUDIT FAILED: {e}"))?;
                outln!("checkpoint signature verified: size {}", latest.size)?;
                let old_note = match (since, &held) {
                    (_, Some(path)) => Some(
                        std::fs::read_to_string(path)
                            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
                    ),
                    (Some(size), None) => {
                        Some(client.checkpoint_at_least(size).await.map_err(|e| {
                            format!("no signed checkpoint of size {size} or more: {e}")
                        })?)
                    }
                    (None, None) => None,
                };
                if let Some(old_note) = old_note {
                    let old = key
                        .open_checkpoint(&old_note)
                        .map_err(|e| format!("AUDIT FAILED: earlier checkpoint: {e}"))?;
                    if let Some(since) = since.filter(|_| held.is_none()) {
                        if old.size < since {
                            return Err(format!(
                                "AUDIT FAILED: asked for a checkpoint of size {since} or more, \
                                 the ledger gave size {}",
                                old.size
                            ));
                        }
                        outln!(
                            "earliest signed checkpoint of size {since} or more: size {}",
                            old.size
                        )?;
                    }
                    if old.size > latest.size {
                        return Err(format!(
                            "AUDIT FAILED: the log shrank from size {} to {}: rolled back or truncated",
                            old.size, latest.size
                        ));
                    }
                    let proof = client
                        .consistency(old.size, latest.size)
                        .await
                        .map_err(fail)?;
                    audit::verify_extends(&old, &note, &proof, key)
                        .map_err(|e| format!("AUDIT FAILED: {e}"))?;
                    outln!(
                        "consistency verified: size {} extends size {}",
                        latest.size,
                        old.size
                    )?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Witnesses whose cosignatures a checkpoint must carry.
#[derive(clap::Args, Clone, Default)]
pub(crate) struct WitnessArgs {
    /// A witness's verifier key (C2SP tlog-cosignature, type 0x04; repeatable).
    #[arg(long = "witness", value_name = "VKEY")]
    pub witnesses: Vec<String>,
    /// Valid cosignatures required [default: every --witness].
    #[arg(long)]
    pub quorum: Option<usize>,
}

impl WitnessArgs {
    pub(crate) fn is_empty(&self) -> bool {
        self.witnesses.is_empty()
    }

    /// The witnesses' keys and the quorum, checked.
    pub(crate) fn verifiers(&self) -> Result<(Vec<NoteVerifier>, usize), String> {
        let verifiers = self
            .witnesses
            .iter()
            .map(|w| NoteVerifier::cosigner(w).map_err(|e| format!("--witness {w}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let quorum = self.quorum.unwrap_or(verifiers.len());
        if quorum == 0 || quorum > verifiers.len() {
            return Err(format!("--quorum must be 1..={}", verifiers.len()));
        }
        Ok((verifiers, quorum))
    }
}

/// The newest checkpoint a quorum of `witnesses` cosigned, once its log signature, the
/// cosignatures and its lag behind the newest checkpoint check out.
pub(crate) async fn witnessed_checkpoint(
    client: &LedgerClient,
    keys: &KeyHistory,
    witnesses: &WitnessArgs,
    max_lag_seconds: u64,
) -> Result<String, String> {
    let (verifiers, quorum) = witnesses.verifiers()?;
    let note = client
        .checkpoint_cosigned(quorum)
        .await
        .map_err(|e| format!("AUDIT FAILED: no checkpoint cosigned by {quorum} witnesses: {e}"))?;
    let witnessed = keys
        .open_checkpoint(&note)
        .map_err(|e| format!("AUDIT FAILED: {e}"))?;
    let valid = cosigned_by(&note, &verifiers);
    if valid.len() < quorum {
        return Err(format!(
            "AUDIT FAILED: checkpoint of size {} carries {} valid cosignature(s) of the given \
             witnesses, --quorum is {quorum}",
            witnessed.size,
            valid.len()
        ));
    }
    let newest = keys
        .open_checkpoint(&client.checkpoint(None).await.map_err(|e| e.to_string())?)
        .map_err(|e| format!("AUDIT FAILED: newest checkpoint: {e}"))?;
    let time = |c: &Checkpoint| c.timestamp().ok().flatten().unwrap_or(0);
    let lag = time(&newest).saturating_sub(time(&witnessed));
    if newest.size > witnessed.size && lag > max_lag_seconds {
        return Err(format!(
            "AUDIT FAILED: the newest checkpoint {quorum} witnesses cosigned (size {}) was \
             signed {lag} s before the newest (size {}), more than --max-witness-lag \
             {max_lag_seconds} s: witnesses are down or lagging",
            witnessed.size, newest.size
        ));
    }
    let names: Vec<&str> = valid.iter().map(|v| v.name()).collect();
    eprintln!(
        "cosigned by {} of {} witnesses ({}); {} entries, {lag} s behind the newest checkpoint",
        valid.len(),
        verifiers.len(),
        names.join(", "),
        newest.size - witnessed.size.min(newest.size)
    );
    Ok(note)
}

/// The ledger's key history, trusted only as far as it follows from the pinned key.
async fn key_history(client: &LedgerClient, pinned: &str) -> Result<KeyHistory, String> {
    let answer = client.log_keys().await.map_err(|e| e.to_string())?;
    let history = KeyHistory::follow(pinned, &answer.transitions)
        .map_err(|e| format!("AUDIT FAILED: key history: {e}"))?;
    if history.newest() != answer.current {
        return Err(
            "AUDIT FAILED: the ledger's current key is not the end of its key history".into(),
        );
    }
    if history.newest() != pinned {
        eprintln!(
            "followed {} key transition(s) from the pinned key to {}",
            history.transitions().len(),
            history.newest()
        );
    }
    Ok(history)
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, String> {
    serde_json::to_string_pretty(value).map_err(|e| e.to_string())
}

/// Prints entries once each checks out: its proof and checkpoint (with `log_key`) and its
/// EAR's signature (with the ledger's key set `ears`).
fn print_entries(
    entries: &[EntryJson],
    log_key: Option<&KeyHistory>,
    ears: &Jwks,
    json: bool,
) -> Result<(), String> {
    if let Some(key) = log_key {
        for entry in entries {
            audit::verify_entry(entry, key).map_err(|e| format!("AUDIT FAILED: {e}"))?;
        }
    }
    let mut statuses = Vec::with_capacity(entries.len());
    for entry in entries {
        statuses.push(match &entry.ear {
            None => "-",
            Some(token) => ear::verify(token, ears)
                .map_err(|e| format!("AUDIT FAILED: the EAR of entry {}: {e}", entry.index))?
                .status()
                .name(),
        });
    }
    if json {
        outln!("{}", to_json(&entries)?)?;
    } else {
        outln!(
            "{:>6} {:>14} {:<16} {:<9} {:<22} {:<15} {:<36}",
            "INDEX",
            "RECEIVED (ms)",
            "AGENT",
            "VERDICT",
            "REASON",
            "EAR",
            "ATTESTATION"
        )?;
        for (e, status) in entries.iter().zip(statuses) {
            outln!(
                "{:>6} {:>14} {:<16} {:<9} {:<22} {:<15} {:<36}",
                e.index,
                e.received_at_ms,
                e.agent_id,
                e.verdict.as_str(),
                e.reason.as_deref().unwrap_or("-"),
                status,
                e.attestation_id
                    .as_deref()
                    .or(e.appraisal_policy.as_deref())
                    .unwrap_or("-"),
            )?;
        }
    }
    let proofs = if log_key.is_some() {
        "inclusion proofs, checkpoint signatures and "
    } else {
        ""
    };
    eprintln!("{} entries: {proofs}EAR signatures verified", entries.len());
    Ok(())
}
