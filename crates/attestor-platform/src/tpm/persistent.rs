//! Keys resident in the TPM: the storage key and the AK persisted (TPM2_EvictControl)
//! under owner-range persistent handles, so that a signature or a quote no longer
//! re-creates a primary key and loads a child under it first.
//!
//! Handles: TPM2_EvictControl with owner authorization accepts 0x81000000–0x817FFFFF (the
//! platform's range starts at 0x81800000). Within it, the TCG reserves 0x81000000–0x8100FFFF
//! for storage primary keys (0x81000001 is the SRK of the TCG template, which systemd and
//! tpm2-tss FAPI persist) and 0x81010000–0x8101FFFF for endorsement primary keys. The
//! defaults sit in the storage-primary block for our (P-384) storage key, away from
//! 0x81000001, and outside both primary blocks for the AK, which is not a primary.
//!
//! A handle is used only while it holds our key: the object's Name (nameAlg ‖ H(public
//! area)) must equal the Name of the storage key re-created from its template, or of the
//! AK blob. Anything else found there (another program's key, an AK from an earlier
//! provisioning) is refused and left alone, naming the handle: no key that is not ours is
//! used, and nothing that might be someone else's is evicted. The Name is checked again on
//! every use, so an object swapped in later fails the command instead of serving it.

use tss_esapi::constants::CapabilityType;
use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::resource_handles::Provision;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::CapabilityData;

use super::{classify, parse_private, parse_public, KeyBlob, Tpm, TpmError};
use attestor_verify::evidence::tpm::keys::SigningAlgorithm;
use attestor_verify::evidence::tpm::{wire, HashAlg};

/// Default persistent handle of the storage key (storage-primary block, not the TCG SRK's
/// 0x81000001).
pub const DEFAULT_SRK_HANDLE: u32 = 0x8100_A77A;
/// Default persistent handle of the AK (owner range, outside the primary-key blocks).
pub const DEFAULT_AK_HANDLE: u32 = 0x8102_A77A;
/// Persistent handles TPM2_EvictControl accepts under owner authorization.
pub const OWNER_PERSISTENT: std::ops::RangeInclusive<u32> = 0x8100_0000..=0x817F_FFFF;

/// Where the storage key and the AK are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersistentHandles {
    /// The storage key (parent of the sealed key).
    pub srk: u32,
    /// The attestation key.
    pub ak: u32,
}

impl Default for PersistentHandles {
    fn default() -> Self {
        PersistentHandles {
            srk: DEFAULT_SRK_HANDLE,
            ak: DEFAULT_AK_HANDLE,
        }
    }
}

impl PersistentHandles {
    /// Why these handles cannot be used, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        for (what, handle) in [("srk_handle", self.srk), ("ak_handle", self.ak)] {
            if !OWNER_PERSISTENT.contains(&handle) {
                return Err(format!(
                    "{what} {handle:#010x} is outside the owner's persistent range \
                     {:#010x}..={:#010x}",
                    OWNER_PERSISTENT.start(),
                    OWNER_PERSISTENT.end()
                ));
            }
        }
        if self.srk == self.ak {
            return Err(format!(
                "srk_handle and ak_handle are both {:#010x}",
                self.srk
            ));
        }
        Ok(())
    }
}

/// The keys this connection found or made resident, with the Names they must keep.
#[derive(Debug, Clone)]
pub(super) struct Resident {
    srk: u32,
    /// The storage key's type: the AK's algorithm, which new sealed keys also use.
    srk_alg: SigningAlgorithm,
    srk_name: Vec<u8>,
    ak: u32,
    ak_name: Vec<u8>,
    ak_public: Vec<u8>,
}

impl Tpm {
    /// Makes the storage key (of `ak`'s algorithm, which the agent's sealed keys share) and
    /// `ak` resident at `handles`: adopts what is already there
    /// when its Name is ours, persists ours where the handle is free, and refuses a handle
    /// holding anything else ([`TpmError::PersistentHandleTaken`]). From then on the sealed
    /// key loads under the resident storage key and `ak` quotes and certifies in place.
    pub fn use_persistent_keys(
        &mut self,
        handles: PersistentHandles,
        ak: &KeyBlob,
    ) -> Result<(), TpmError> {
        handles.check().map_err(TpmError::PersistentHandleRange)?;
        let srk_alg = ak.algorithm()?;
        // The storage key is a primary: its template re-creates the same key, whose Name
        // is what a resident one must have.
        let srk_name = {
            let srk = self.create_srk(srk_alg)?;
            self.with_flushed(srk.into(), |t| {
                let name = t.name_of("TR_GetName(SRK)", srk.into())?;
                if !t.is_occupied(handles.srk)? {
                    t.persist(srk.into(), handles.srk, "EvictControl(SRK)")?;
                }
                Ok(name)
            })?
        };
        self.expect_resident(handles.srk, &srk_name, "storage key")?;

        let ak_name = blob_name(ak)?;
        if !self.is_occupied(handles.ak)? {
            let (public, private) = (parse_public(ak)?, parse_private(ak)?);
            let ek = self.create_ek()?;
            let loaded = self.with_flushed(ek.into(), |t| t.load_under_ek(ek, private, public))?;
            self.with_flushed(loaded.into(), |t| {
                t.persist(loaded.into(), handles.ak, "EvictControl(AK)")
            })?;
        }
        self.expect_resident(handles.ak, &ak_name, "AK")?;

        self.resident = Some(Resident {
            srk: handles.srk,
            srk_alg,
            srk_name,
            ak: handles.ak,
            ak_name,
            ak_public: ak.public.clone(),
        });
        Ok(())
    }

    /// Whether this connection uses resident keys.
    pub fn uses_persistent_keys(&self) -> bool {
        self.resident.is_some()
    }

    /// Runs `f` with the storage key of `alg`'s type: the resident one, or one re-created
    /// from its template and flushed afterwards (also for a sealed key of another type than
    /// the resident storage key, e.g. one made before the AK's algorithm changed).
    pub(super) fn with_srk<T>(
        &mut self,
        alg: SigningAlgorithm,
        f: impl FnOnce(&mut Self, KeyHandle) -> Result<T, TpmError>,
    ) -> Result<T, TpmError> {
        match self.resident.clone() {
            Some(r) if r.srk_alg == alg => self.with_resident(r.srk, &r.srk_name, "storage key", f),
            _ => {
                let srk = self.create_srk(alg)?;
                self.with_flushed(srk.into(), |t| f(t, srk))
            }
        }
    }

    /// Whether `blob` is the AK made resident.
    pub(super) fn is_resident_ak(&self, blob: &KeyBlob) -> bool {
        self.resident
            .as_ref()
            .is_some_and(|r| r.ak_public == blob.public)
    }

    /// Runs `f` with the resident AK (see [`Tpm::is_resident_ak`]).
    pub(super) fn with_resident_ak<T>(
        &mut self,
        f: impl FnOnce(&mut Self, KeyHandle) -> Result<T, TpmError>,
    ) -> Result<T, TpmError> {
        let r = self.resident.clone().ok_or(TpmError::UnexpectedResponse {
            op: "resident AK",
            what: "no key was made resident",
        })?;
        self.with_resident(r.ak, &r.ak_name, "AK", f)
    }

    /// Opens the object at `handle`, checks it still has `name`, runs `f`, and closes the
    /// handle in this library only (a resident key is never flushed).
    fn with_resident<T>(
        &mut self,
        handle: u32,
        name: &[u8],
        what: &'static str,
        f: impl FnOnce(&mut Self, KeyHandle) -> Result<T, TpmError>,
    ) -> Result<T, TpmError> {
        let mut object = self.open_persistent(handle)?;
        let out = match self.name_of("TR_GetName(resident key)", object) {
            Ok(found) if found == name => f(self, KeyHandle::from(object)),
            Ok(found) => Err(TpmError::PersistentKeyChanged {
                handle,
                what,
                found: hex::encode(found),
            }),
            Err(e) => Err(e),
        };
        let closed = self
            .ctx
            .tr_close(&mut object)
            .map_err(|e| classify("TR_Close", e));
        match (out, closed) {
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
            (Ok(v), Ok(())) => Ok(v),
        }
    }

    /// Fails unless `handle` holds an object named `name`.
    fn expect_resident(
        &mut self,
        handle: u32,
        name: &[u8],
        what: &'static str,
    ) -> Result<(), TpmError> {
        let mut object = self.open_persistent(handle)?;
        let found = self.name_of("TR_GetName(persistent)", object);
        self.ctx
            .tr_close(&mut object)
            .map_err(|e| classify("TR_Close", e))?;
        let found = found?;
        if found != name {
            return Err(TpmError::PersistentHandleTaken {
                handle,
                what,
                found: hex::encode(found),
            });
        }
        Ok(())
    }

    fn open_persistent(&mut self, handle: u32) -> Result<ObjectHandle, TpmError> {
        let tpm_handle = PersistentTpmHandle::new(handle)
            .map(TpmHandle::Persistent)
            .map_err(|e| classify("persistent handle", e))?;
        self.ctx
            .execute_without_session(|c| c.tr_from_tpm_public(tpm_handle))
            .map_err(|e| classify("TR_FromTPMPublic(persistent)", e))
    }

    fn name_of(&mut self, op: &'static str, object: ObjectHandle) -> Result<Vec<u8>, TpmError> {
        self.ctx
            .tr_get_name(object)
            .map(|n| n.value().to_vec())
            .map_err(|e| classify(op, e))
    }

    fn is_occupied(&mut self, handle: u32) -> Result<bool, TpmError> {
        let (data, _more) = self
            .ctx
            .execute_without_session(|c| c.get_capability(CapabilityType::Handles, handle, 1))
            .map_err(|e| classify("GetCapability(HANDLES)", e))?;
        Ok(matches!(&data, CapabilityData::Handles(list)
            if list.iter().any(|h| u32::from(*h) == handle)))
    }

    fn persist(
        &mut self,
        object: ObjectHandle,
        handle: u32,
        op: &'static str,
    ) -> Result<(), TpmError> {
        let persistent = PersistentTpmHandle::new(handle)
            .map(Persistent::Persistent)
            .map_err(|e| classify(op, e))?;
        let mut resident = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.evict_control(Provision::Owner, object, persistent)
            })
            .map_err(|e| classify(op, e))?;
        self.ctx
            .tr_close(&mut resident)
            .map_err(|e| classify("TR_Close", e))
    }
}

/// The Name a blob's key has once loaded: nameAlg ‖ H_nameAlg(TPMT_PUBLIC).
fn blob_name(blob: &KeyBlob) -> Result<Vec<u8>, TpmError> {
    // Canonical (no trailing bytes), so its hash is the loaded key's.
    parse_public(blob)?;
    let name_alg = blob
        .public
        .get(2..4)
        .and_then(|b| <[u8; 2]>::try_from(b).ok())
        .map(u16::from_be_bytes)
        .and_then(HashAlg::from_tpm_alg_id)
        .ok_or_else(|| {
            TpmError::MalformedKeyBlob("nameAlg is not SHA-256, SHA-384 or SHA-512".into())
        })?;
    Ok(wire::object_name(&blob.public, name_alg))
}
