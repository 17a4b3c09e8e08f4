//! Which API versions the server offers for the kinds whose stable versions are recent:
//! `policy/v1` PodDisruptionBudget (1.21+) and `autoscaling/v2` HorizontalPodAutoscaler (1.23+).
//! Older servers get the same objects under `policy/v1beta1` / `autoscaling/v2beta2`, whose fields
//! we use are identical; a server with neither gets none, with a warning logged once.

use kube::Client;
use kube::core::{ApiResource, GroupVersionKind};

/// The versions chosen at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSupport {
    pub pdb: Option<ApiResource>,
    pub hpa: Option<ApiResource>,
}

fn res(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

pub fn pdb_v1() -> ApiResource {
    res(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
    )
}
pub fn pdb_v1beta1() -> ApiResource {
    res(
        "policy",
        "v1beta1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
    )
}
pub fn hpa_v2() -> ApiResource {
    res(
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
    )
}
pub fn hpa_v2beta2() -> ApiResource {
    res(
        "autoscaling",
        "v2beta2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
    )
}

impl ApiSupport {
    /// Everything current: what a recent server offers, and what tests without a server assume.
    pub fn latest() -> Self {
        ApiSupport {
            pdb: Some(pdb_v1()),
            hpa: Some(hpa_v2()),
        }
    }

    /// Asks the server, newest version first.
    pub async fn discover(client: &Client) -> Result<Self, kube::Error> {
        let pdb = first_served(client, &[pdb_v1(), pdb_v1beta1()]).await?;
        let hpa = first_served(client, &[hpa_v2(), hpa_v2beta2()]).await?;
        match &pdb {
            Some(r) => tracing::info!(api_version = %r.api_version, "PodDisruptionBudget version"),
            None => tracing::warn!("server offers no PodDisruptionBudget API: PDBs are skipped"),
        }
        match &hpa {
            Some(r) => {
                tracing::info!(api_version = %r.api_version, "HorizontalPodAutoscaler version")
            }
            None => {
                tracing::warn!("server offers no autoscaling/v2 API: logic autoscaling is skipped")
            }
        }
        Ok(ApiSupport { pdb, hpa })
    }
}

async fn first_served(
    client: &Client,
    candidates: &[ApiResource],
) -> Result<Option<ApiResource>, kube::Error> {
    for c in candidates {
        match client.list_api_group_resources(&c.api_version).await {
            Ok(list) => {
                if list.resources.iter().any(|r| r.name == c.plural) {
                    return Ok(Some(c.clone()));
                }
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}
