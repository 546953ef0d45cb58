//! Starting partnership: database, migrations, consumers, demonstration data.

use crate::SERVICE;
use crate::messaging::Partnerships;
use crate::storage::{self, Migrator};
use chrono::NaiveDate;
use shared::auth::Principal;
use shared::money::Fen;
use shared::region::RegionCode;
use shared::rpcs::{CreateAgreement, CreatePartnership, CustomTarget, YearTarget};
use shared::runtime::Runtime;
use tracing::{info, warn};

/// Connects, migrates, seeds the demonstration pairs when asked and none
/// exist, and consumes events and RPCs.
pub async fn start(rt: &Runtime) -> anyhow::Result<()> {
    let (db, _outbox) = rt.service_db::<Migrator>(SERVICE).await?;
    let partnerships = Partnerships { db };
    partnerships.apply_terms_once().await?;
    // One replica seeds, however many start on an empty database at once.
    if rt.settings.demo()
        && storage::partnerships(&partnerships.db).await?.is_empty()
        && shared::db::claim_once(&partnerships.db, "demo partnerships").await?
    {
        seed_demo(&partnerships).await?;
    }
    rt.bus.subscribe(partnerships.events()).await?;
    rt.bus.serve(partnerships.rpc()).await?;
    // Recredits a replica stopped in, or an RPC left to go on.
    let cancel = rt.cancel.clone();
    rt.tracker.spawn(async move {
        loop {
            if let Err(e) = partnerships.recredit_queued(&cancel).await {
                warn!(error = %e, "crediting queued partnerships failed; will retry");
            }
            tokio::select! {
                () = tokio::time::sleep(crate::messaging::RECREDIT_EVERY) => {}
                () = cancel.cancelled() => break,
            }
        }
    });
    Ok(())
}

fn date(y: i32, m: u32, d: u32) -> anyhow::Result<NaiveDate> {
    NaiveDate::from_ymd_opt(y, m, d).ok_or_else(|| anyhow::anyhow!("bad date {y}-{m}-{d}"))
}

/// Demonstration data (marked `demo`, notes start with [演示]): the
/// Beijing–Inner Mongolia cooperation (京蒙协作) at province level with the
/// 2018 tourism framework agreement, and Beijing districts paired with
/// poverty counties and banners of 赤峰, 乌兰察布 and 兴安盟. The pairs illustrate
/// the model; they are not the official pairing list.
pub async fn seed_demo(p: &Partnerships) -> anyhow::Result<()> {
    let pairs = [
        (
            "110000",
            "150000",
            1996,
            "[演示] 京蒙协作：北京市—内蒙古自治区",
        ),
        ("110108", "150430", 2018, "[演示] 海淀区—敖汉旗"),
        ("110105", "150423", 2018, "[演示] 朝阳区—巴林右旗"),
        ("110102", "150428", 2018, "[演示] 西城区—喀喇沁旗"),
        ("110101", "150922", 2018, "[演示] 东城区—化德县"),
        ("110106", "152223", 2018, "[演示] 丰台区—扎赉特旗"),
    ];
    let mut province = None;
    for (sponsor, beneficiary, since, notes) in pairs {
        let created = p
            .create_partnership(CreatePartnership {
                sponsor: RegionCode::parse(sponsor)?,
                beneficiary: RegionCode::parse(beneficiary)?,
                since: Some(date(since, 1, 1)?),
                notes: Some(notes.into()),
                demo: true,
                by: Principal::platform(),
            })
            .await?;
        province.get_or_insert(created.id);
    }
    if let Some(partnership_id) = province {
        let targets = (2024..=2027)
            .map(|year| YearTarget {
                year,
                tourists: Some(2_000),
                spend: Some(Fen::yuan(1_500_000)),
                certified_spend: Some(Fen::yuan(600_000)),
                custom: vec![CustomTarget {
                    name: "[演示] 培训乡村旅游带头人".into(),
                    target: 30.0,
                    unit: Some("人次".into()),
                }],
            })
            .collect();
        p.create_agreement(CreateAgreement {
            partnership_id,
            title: "[演示] 《京蒙旅游扶贫协作框架协议》".into(),
            signed_on: date(2018, 6, 1)?,
            starts_on: date(2018, 6, 1)?,
            ends_on: date(2027, 12, 31)?,
            signatories: vec![
                "北京市旅游发展委员会".into(),
                "内蒙古自治区旅游发展委员会".into(),
            ],
            targets,
            by: Principal::platform(),
        })
        .await?;
    }
    info!("seeded the demonstration partnerships (京蒙协作)");
    Ok(())
}
