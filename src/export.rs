//! `attestor export` and `attestor export verify`: an evidence pack an auditor carries
//! away and re-verifies offline, years later (docs/compliance.md).
//!
//! A pack holds one tenant's entries of a period, each with its inclusion proof in one
//! signed checkpoint (with the witnesses' cosignatures when asked for), the key history
//! from the pinned key to that checkpoint's, the tenant's appraisal policy records, its
//! incidents, the EAR keys and enrollment CA, the firmware profile the exporter gives,
//! and a manifest of every file's SHA-256. `verify` re-checks all of it: the manifest,
//! the checkpoint (and its quorum), every proof, every EAR, and every kept bundle with the
//! offline verifier at the time the ledger logged it, which the log proves.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use std::io::{BufRead, Read, Write};

use aws_lc_rs::digest::{digest, Context, SHA256};
use serde::{Deserialize, Serialize};

use attestor_agent::client::LedgerClient;
use attestor_verify::api::{EntryJson, Incident, IncidentsResponse, LogKeysResponse, Verdict};
use attestor_verify::bundle::{Bundle, Evidence};
use attestor_verify::checks::{self, AkTrust, Check, Expectations};
use attestor_verify::ear::{self, Jwks};
use attestor_verify::evidence::certchain;
use attestor_verify::evidence::tpm::credential::ak_name;
use attestor_verify::log::keys::KeyHistory;
use attestor_verify::log::witness::cosigned_by;
use attestor_verify::profiles::Profile;

use crate::query::{witnessed_checkpoint, WitnessArgs};
use attestor_verify::record::{is_recorder, LogRecord, POLICY_RECORDER};

/// The manifest's format name.
const FORMAT: &str = "attestor-evidence-pack/v1";
const MANIFEST: &str = "manifest.json";
/// The manifest's own SHA-256, in `sha256sum` format (`sha256sum -c` checks it too).
const MANIFEST_SUM: &str = "manifest.sha256";
/// Entries asked for per page.
const PAGE: u32 = 1000;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    format: String,
    tenant: String,
    from_ms: u64,
    to_ms: u64,
    checkpoint_size: u64,
    exported_at_ms: u64,
    /// File name → lowercase hex SHA-256 of its bytes.
    files: BTreeMap<String, String>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(digest(&SHA256, bytes).as_ref())
}

fn now_ms() -> u64 {
    attestor_verify::time::now_ms()
}

/// Writes every entry of `query` (pages of [`PAGE`]), proven in the checkpoint of `size`,
/// to `path` as JSON lines, with the repeated checkpoint note left out (the pack holds it
/// once); returns how many and the file's SHA-256. Streamed: a pack of millions of
/// entries never sits in memory.
async fn write_entries(
    client: &LedgerClient,
    query: &str,
    size: u64,
    path: &Path,
) -> Result<(u64, String), String> {
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = HashingWriter {
        inner: std::io::BufWriter::new(file),
        hash: Context::new(&SHA256),
    };
    let (mut count, mut after) = (0, None);
    loop {
        let page_query = match after {
            Some(after) => format!("{query}&limit={PAGE}&proofs_at={size}&after={after}"),
            None => format!("{query}&limit={PAGE}&proofs_at={size}"),
        };
        let page = client
            .entries(&page_query)
            .await
            .map_err(|e| e.to_string())?;
        for mut entry in page.entries {
            if entry.index >= size {
                // Logged after the pack's checkpoint (the period is still open): no proof
                // in it exists, so the pack ends at the checkpoint.
                eprintln!(
                    "entries from index {} on are newer than checkpoint {size}: left out; \
                     export again once the period has ended",
                    entry.index
                );
                break;
            }
            match entry.proof.as_mut() {
                Some(proof) => proof.checkpoint.clear(),
                None => return Err(format!("entry {} came without a proof", entry.index)),
            }
            serde_json::to_writer(&mut out, &entry).map_err(|e| e.to_string())?;
            out.write_all(b"\n").map_err(|e| e.to_string())?;
            count += 1;
        }
        match page.next_after.filter(|&next| next + 1 < size) {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let HashingWriter { inner, hash } = out;
    let file = inner.into_inner().map_err(|e| e.to_string())?;
    file.sync_all().map_err(|e| e.to_string())?;
    Ok((count, hex::encode(hash.finish().as_ref())))
}

/// Writes through, hashing what it writes.
struct HashingWriter<W> {
    inner: W,
    hash: Context,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.hash.update(&bytes[..written]);
        Ok(written)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A file's SHA-256, read in chunks.
fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hash = Context::new(&SHA256);
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        match file.read(&mut buffer)? {
            0 => return Ok(hex::encode(hash.finish().as_ref())),
            n => hash.update(&buffer[..n]),
        }
    }
}

fn to_json(value: &impl Serialize) -> Result<Vec<u8>, String> {
    serde_json::to_vec_pretty(value).map_err(|e| e.to_string())
}

/// What `attestor export` is asked for.
pub(crate) struct ExportRequest<'a> {
    pub tenant: &'a str,
    pub from_ms: u64,
    pub to_ms: u64,
    pub out: &'a Path,
    pub profile: Option<&'a Path>,
    pub log_key: &'a str,
    pub witnesses: &'a WitnessArgs,
}

/// Writes the pack of `request` into a new directory.
pub(crate) async fn export(
    client: &LedgerClient,
    request: &ExportRequest<'_>,
) -> Result<(), String> {
    let fail = |e: attestor_agent::client::ClientError| e.to_string();
    let tenant = client.tenant().await.map_err(fail)?.tenant;
    if tenant != request.tenant {
        return Err(format!(
            "--tenant {} but the client certificate is of tenant {tenant}",
            request.tenant
        ));
    }
    if request.from_ms >= request.to_ms {
        return Err("--from must be before --to".into());
    }
    let keys = client.log_keys().await.map_err(fail)?;
    let history = KeyHistory::follow(request.log_key, &keys.transitions)
        .map_err(|e| format!("the ledger's key history does not follow from --log-key: {e}"))?;
    let note = if request.witnesses.is_empty() {
        client.checkpoint(None).await.map_err(fail)?
    } else {
        witnessed_checkpoint(client, &history, request.witnesses, u64::MAX).await?
    };
    let checkpoint = history.open_checkpoint(&note).map_err(|e| e.to_string())?;
    std::fs::create_dir(request.out)
        .map_err(|e| format!("cannot create {}: {e}", request.out.display()))?;
    let mut manifest = Manifest {
        format: FORMAT.into(),
        tenant,
        from_ms: request.from_ms,
        to_ms: request.to_ms,
        checkpoint_size: checkpoint.size,
        exported_at_ms: now_ms(),
        files: BTreeMap::new(),
    };
    let period = format!("from={}&to={}", request.from_ms, request.to_ms);
    let policy_query = format!("agent={POLICY_RECORDER}&to={}", request.to_ms);
    let mut counts = Vec::new();
    for (name, query) in [
        ("entries.jsonl", &period),
        ("policies.jsonl", &policy_query),
    ] {
        let (count, sum) =
            write_entries(client, query, checkpoint.size, &request.out.join(name)).await?;
        manifest.files.insert(name.into(), sum);
        counts.push(count);
    }
    let incidents: Vec<Incident> = client
        .incidents("")
        .await
        .map_err(fail)?
        .incidents
        .into_iter()
        .filter(|i| {
            i.opened_at_ms < request.to_ms
                && i.resolved
                    .as_ref()
                    .is_none_or(|r| r.at_ms >= request.from_ms)
        })
        .collect();
    let mut files: Vec<(&str, Vec<u8>)> = vec![
        ("checkpoint", note.into_bytes()),
        ("log-keys.json", to_json(&keys)?),
        ("incidents.json", to_json(&IncidentsResponse { incidents })?),
        (
            "ear-jwks.json",
            to_json(&client.ear_jwks().await.map_err(fail)?)?,
        ),
        (
            "enrollment-ca.pem",
            client.enrollment_ca().await.map_err(fail)?.into_bytes(),
        ),
    ];
    if let Some(path) = request.profile {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        files.push(("profile.toml", bytes));
    }
    for (name, bytes) in &files {
        manifest
            .files
            .insert((*name).to_string(), sha256_hex(bytes));
        write(&request.out.join(name), bytes)?;
    }
    let manifest = to_json(&manifest)?;
    write(&request.out.join(MANIFEST), &manifest)?;
    let sum = format!("{}  {MANIFEST}\n", sha256_hex(&manifest));
    write(&request.out.join(MANIFEST_SUM), sum.as_bytes())?;
    eprintln!(
        "exported {} entries of tenant {} ({} policy records) proven in checkpoint {}",
        counts[0], request.tenant, counts[1], checkpoint.size
    );
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    attestor_verify::fs::write_atomically(path, bytes).map_err(|e| e.to_string())
}

/// What `attestor export verify` checks a pack against.
pub(crate) struct VerifyRequest<'a> {
    pub dir: &'a Path,
    pub log_key: &'a str,
    pub profile: Option<&'a Path>,
    pub witnesses: &'a WitnessArgs,
    pub max_gap: Duration,
}

#[derive(Default)]
struct AgentSummary {
    accepted: u64,
    refused: u64,
    /// Refused by the ledger, yet the evidence verifies offline: a stateful check (nonce,
    /// continuity, pinned AK, expected policy) refused it.
    refused_statefully: u64,
    late: u64,
    /// Accepted bundles without an AK certificate: their AK binding rests on the ledger.
    ak_pinned_by_ledger: u64,
    accepted_at_ms: Vec<u64>,
    incidents: u64,
}

/// Re-verifies a pack; returns the report, or the first failure naming its file.
pub(crate) fn verify(request: &VerifyRequest<'_>) -> Result<String, String> {
    let dir = request.dir;
    let read = |name: &str| -> Result<Vec<u8>, String> {
        std::fs::read(dir.join(name)).map_err(|e| format!("{name}: cannot read: {e}"))
    };
    let manifest_bytes = read(MANIFEST)?;
    let sum = read(MANIFEST_SUM)?;
    if sum != format!("{}  {MANIFEST}\n", sha256_hex(&manifest_bytes)).as_bytes() {
        return Err(format!(
            "{MANIFEST} or {MANIFEST_SUM}: altered (the manifest's SHA-256 differs)"
        ));
    }
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| format!("{MANIFEST}: not a pack manifest: {e}"))?;
    if manifest.format != FORMAT {
        return Err(format!(
            "{MANIFEST}: format {:?}, expected {FORMAT}",
            manifest.format
        ));
    }
    /// Files read whole; the entry files are streamed.
    const STREAMED: [&str; 2] = ["entries.jsonl", "policies.jsonl"];
    let mut contents = BTreeMap::new();
    for (name, expected) in &manifest.files {
        if name.contains('/') || name == MANIFEST || name == MANIFEST_SUM {
            return Err(format!("{MANIFEST}: names {name:?}, not a pack file"));
        }
        let sum = sha256_file(&dir.join(name)).map_err(|e| format!("{name}: cannot read: {e}"))?;
        if &sum != expected {
            return Err(format!(
                "{name}: altered (its SHA-256 is not the one {MANIFEST} lists)"
            ));
        }
        if !STREAMED.contains(&name.as_str()) {
            contents.insert(name.as_str(), read(name)?);
        }
    }
    for streamed in STREAMED {
        if !manifest.files.contains_key(streamed) {
            return Err(format!("{MANIFEST}: lists no {streamed}"));
        }
    }
    for found in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let name = found.map_err(|e| e.to_string())?.file_name();
        let name = name.to_string_lossy();
        if name != MANIFEST && name != MANIFEST_SUM && !manifest.files.contains_key(name.as_ref()) {
            return Err(format!("{name}: not in the manifest"));
        }
    }
    let file = |name: &'static str| {
        contents
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| format!("{MANIFEST}: lists no {name}"))
    };
    let text = |name: &'static str| {
        std::str::from_utf8(file(name)?).map_err(|_| format!("{name}: not UTF-8"))
    };
    let keys: LogKeysResponse = serde_json::from_slice(file("log-keys.json")?)
        .map_err(|e| format!("log-keys.json: {e}"))?;
    let history = KeyHistory::follow(request.log_key, &keys.transitions)
        .map_err(|e| format!("log-keys.json: does not follow from the pinned key: {e}"))?;
    let note = text("checkpoint")?;
    let checkpoint = history
        .open_checkpoint(note)
        .map_err(|e| format!("checkpoint: {e}"))?;
    if checkpoint.size != manifest.checkpoint_size {
        return Err(format!(
            "checkpoint: size {}, the manifest says {}",
            checkpoint.size, manifest.checkpoint_size
        ));
    }
    let mut report = String::new();
    if !request.witnesses.is_empty() {
        let (verifiers, quorum) = request.witnesses.verifiers()?;
        let valid = cosigned_by(note, &verifiers).len();
        if valid < quorum {
            return Err(format!("checkpoint: {valid} valid cosignature(s) of the given witnesses, --quorum is {quorum}"));
        }
        let _ = writeln!(
            report,
            "checkpoint cosigned by {valid} of {} witnesses",
            verifiers.len()
        );
    }
    let jwks: Jwks = serde_json::from_slice(file("ear-jwks.json")?)
        .map_err(|e| format!("ear-jwks.json: {e}"))?;
    let profile = offline_profile(request.profile, &contents)?;
    // Each entry of `name`, proven and decoded, to `visit`, one line at a time.
    let check_entries = |name: &'static str,
                         visit: &mut dyn FnMut(&EntryJson, &LogRecord) -> Result<(), String>|
     -> Result<u64, String> {
        let file = std::fs::File::open(dir.join(name)).map_err(|e| format!("{name}: {e}"))?;
        let mut count = 0;
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let at = || format!("{name} line {}", n + 1);
            let line = line.map_err(|e| format!("{}: {e}", at()))?;
            let mut entry: EntryJson =
                serde_json::from_str(&line).map_err(|e| format!("{}: {e}", at()))?;
            match entry.proof.as_mut() {
                Some(proof) => proof.checkpoint = note.to_string(),
                None => return Err(format!("{}: no inclusion proof", at())),
            }
            let proven = attestor_verify::audit::verify_entry(&entry, &history)
                .map_err(|e| format!("{}: {e}", at()))?;
            if proven.size != checkpoint.size || entry.tenant != manifest.tenant {
                return Err(format!(
                    "{}: not an entry of this pack's tenant and checkpoint",
                    at()
                ));
            }
            if let Some(token) = &entry.ear {
                ear::verify(token, &jwks).map_err(|e| format!("{}: EAR: {e}", at()))?;
            }
            let record = LogRecord::from_leaf(&entry.leaf).map_err(|e| format!("{}: {e}", at()))?;
            visit(&entry, &record).map_err(|e| format!("{}: {e}", at()))?;
            count += 1;
        }
        Ok(count)
    };
    let policies = check_entries("policies.jsonl", &mut |entry, _| {
        if entry.agent_id == POLICY_RECORDER {
            Ok(())
        } else {
            Err("not a policy record".into())
        }
    })?;
    let mut agents: BTreeMap<String, AgentSummary> = BTreeMap::new();
    let logged = check_entries("entries.jsonl", &mut |entry, record| {
        if entry.received_at_ms < manifest.from_ms || entry.received_at_ms >= manifest.to_ms {
            return Err(format!(
                "entry {} is outside the pack's period",
                entry.index
            ));
        }
        if is_recorder(&entry.agent_id) {
            return Ok(());
        }
        let agent = agents.entry(entry.agent_id.clone()).or_default();
        let offline = match (&profile, record.submission.is_empty()) {
            (Some((profile, _)), false) => {
                Some(verify_at(&record.submission, profile, entry.received_at_ms))
            }
            _ => None,
        };
        match (entry.verdict, offline) {
            (Verdict::Accepted, Some(Err(failure))) => {
                return Err(format!(
                    "entry {} (agent {}) was accepted but does not verify offline at its \
                     ledger time: {failure}",
                    entry.index, entry.agent_id
                ))
            }
            (Verdict::Accepted, shown) => {
                agent.accepted += 1;
                agent.accepted_at_ms.push(entry.received_at_ms);
                if let Some(Ok(AkShown::PinnedByLedger)) = shown {
                    agent.ak_pinned_by_ledger += 1;
                }
            }
            (Verdict::Late, _) => agent.late += 1,
            (Verdict::Refused, Some(Ok(_))) => {
                agent.refused += 1;
                agent.refused_statefully += 1;
            }
            (Verdict::Refused, _) => agent.refused += 1,
        }
        Ok(())
    })?;
    let incidents: IncidentsResponse = serde_json::from_slice(file("incidents.json")?)
        .map_err(|e| format!("incidents.json: {e}"))?;
    for incident in &incidents.incidents {
        agents
            .entry(incident.agent_id.clone())
            .or_default()
            .incidents += 1;
    }
    let max_gap = u64::try_from(request.max_gap.as_millis()).unwrap_or(u64::MAX);
    let _ = writeln!(
        report,
        "{:<24} {:>8} {:>8} {:>10} {:>6} {:>6} {:>14} {:>9} {:>13}",
        "AGENT",
        "ACCEPTED",
        "REFUSED",
        "(STATEFUL)",
        "LATE",
        "GAPS",
        "LONGEST GAP s",
        "INCIDENTS",
        "AK BY LEDGER"
    );
    for (id, a) in &agents {
        let mut edges = vec![manifest.from_ms];
        edges.extend(&a.accepted_at_ms);
        edges.push(manifest.to_ms);
        let gaps: Vec<u64> = edges
            .windows(2)
            .map(|w| w[1].saturating_sub(w[0]))
            .collect();
        let over = gaps.iter().filter(|&&g| g > max_gap).count();
        let longest = gaps.iter().max().copied().unwrap_or(0);
        let _ = writeln!(
            report,
            "{id:<24} {:>8} {:>8} {:>10} {:>6} {over:>6} {:>14} {:>9}",
            a.accepted,
            a.refused,
            a.refused_statefully,
            a.late,
            longest / 1000,
            a.incidents
        );
    }
    let bundles = match &profile {
        Some((_, true)) => {
            "every kept bundle re-verified at its ledger time against the given \
             firmware profile (the one packed)"
        }
        Some((_, false)) => {
            "every kept bundle re-verified at its ledger time against the given \
             firmware profile (NOT the one packed)"
        }
        None => "bundles NOT re-verified (give --profile)",
    };
    let _ = writeln!(
        report,
        "OK: {} entries and {} policy records of tenant {} proven in checkpoint {} (key history \
         followed from the pinned key), every EAR verified, {bundles}; NOT proven offline: \
         that the ledger issued each nonce, the AK binding of bundles without an AK \
         certificate (AK BY LEDGER: pinned by credential activation at enrollment), and \
         incidents.json (the ledger's account)",
        logged, policies, manifest.tenant, checkpoint.size
    );
    Ok(report)
}

/// The firmware profile bundles are re-verified against: the auditor's own (its trust
/// anchors must be theirs, never the pack's), trusting the pack's enrollment CA for AK
/// certificates as the ledger did. Returns it and whether it is byte for byte the profile
/// the exporter packed.
fn offline_profile(
    given: Option<&Path>,
    contents: &BTreeMap<&str, Vec<u8>>,
) -> Result<Option<(Profile, bool)>, String> {
    let Some(path) = given else {
        return Ok(None);
    };
    let mut profile = Profile::load(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let same =
        std::fs::read(path).ok().as_deref() == contents.get("profile.toml").map(Vec::as_slice);
    if let (Some(tpm), Some(pem)) = (profile.tpm.as_mut(), contents.get("enrollment-ca.pem")) {
        let pem =
            std::str::from_utf8(pem).map_err(|_| "enrollment-ca.pem: not UTF-8".to_string())?;
        let certificates =
            certchain::pem_to_der_all(pem).map_err(|e| format!("enrollment-ca.pem: {e}"))?;
        tpm.ak_trust_anchors.extend(certificates);
    }
    Ok(Some((profile, same)))
}

/// How a kept bundle's AK was shown to be in its EK's TPM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AkShown {
    /// By an AK certificate the profile or the pack's enrollment CA vouches for.
    Certificate,
    /// Not offline: the bundle carries no AK certificate. The ledger pinned the AK by
    /// credential activation at enrollment; offline, every other check ran on it.
    PinnedByLedger,
}

/// The offline verifier on a kept bundle, with "now" the ledger time it was logged at.
/// The nonce is the one the bundle carries: that the ledger issued it is checked by the
/// ledger only.
fn verify_at(submission: &[u8], profile: &Profile, at_ms: u64) -> Result<AkShown, String> {
    let bundle = Bundle::from_json(submission).map_err(|e| format!("bundle: {e}"))?;
    let mut expect = Expectations {
        nonce: bundle.nonce.clone(),
        now: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(at_ms)),
        ak: AkTrust::Certificate,
        ..Default::default()
    };
    let failure = match checks::verify_bundle(&bundle, profile, &expect) {
        Ok(_) => return Ok(AkShown::Certificate),
        Err(e) => e,
    };
    let ak_public = match &bundle.evidence {
        Evidence::Tpm(ev) if failure.check == Check::AkBinding && ev.ak_certificates.is_empty() => {
            &ev.ak_public
        }
        _ => return Err(format!("{}: {}", failure.check, failure.reason)),
    };
    expect.ak = AkTrust::Name(ak_name(ak_public).map_err(|e| format!("ak-binding: {e}"))?);
    checks::verify_bundle(&bundle, profile, &expect)
        .map(|_| AkShown::PinnedByLedger)
        .map_err(|e| format!("{}: {}", e.check, e.reason))
}
