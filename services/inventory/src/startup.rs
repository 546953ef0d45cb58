//! Starting inventory: database, migrations, demo catalogue, consumers.

use crate::SERVICE;
use crate::messaging::Inventory;
use crate::storage::{self, Migrator};
use chrono::{Datelike, Duration, Utc};
use shared::auth::Principal;
use shared::money::Fen;
use shared::region::RegionCode;
use shared::rpcs::{
    AddDeparture, CreateHomestay, CreateRoute, ItineraryDay, NewRoomType, RouteStatus,
    SetRoomCalendar, SetRouteStatus,
};
use shared::rpcs::{AdvanceCertification, ApplyForCertification, CertificationStep};
use shared::rpcs::{HomestayDetails, HomestayGrade};
use shared::runtime::Runtime;
use tracing::info;

/// Connects, migrates, seeds the demo catalogue if asked and empty, and
/// starts consuming events and RPCs.
pub async fn start(rt: &Runtime) -> anyhow::Result<()> {
    let (db, outbox) = rt.service_db::<Migrator>(SERVICE).await?;
    storage::refresh_regions(&db).await?;
    let inventory = Inventory { db, outbox };
    // One replica seeds, however many start on an empty database at once.
    if rt.settings.demo()
        && storage::homestay_count(&inventory.db).await? == 0
        && shared::db::claim_once(&inventory.db, "demo catalogue").await?
    {
        seed_demo(&inventory).await?;
    }
    rt.bus.subscribe(inventory.events()).await?;
    rt.bus.serve(inventory.rpc()).await?;

    let grace = chrono::Duration::seconds(rt.settings.hold_grace_seconds.max(0));
    let cancel = rt.cancel.clone();
    let bus = rt.bus.clone();
    // Booking not answering, overdue holds are released only once it has
    // not answered for `grace`: since this start (embedded, booking starts
    // after inventory) and since its last answer (a booking being
    // redeployed, its confirmations still queued here).
    let patience = std::time::Duration::from_secs(grace.num_seconds().max(0).unsigned_abs());
    rt.tracker.spawn(async move {
        let mut heard = std::time::Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                () = cancel.cancelled() => break,
            }
            let release_unanswered = heard.elapsed() >= patience;
            match inventory
                .expire_holds(grace, Some(bus.as_ref()), release_unanswered)
                .await
            {
                Ok(swept) if swept.booking_answered => heard = std::time::Instant::now(),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "hold expiry sweep failed; will retry"),
            }
        }
    });
    Ok(())
}

/// Demonstration data, every name labelled [演示]: homestays in 敖汉旗,
/// 黎平县 黄岗村 and 四子王旗 with 90 nights on sale, and the routes of the
/// stories in DOMAIN.md — 首都—草原, 环京津冀千里草原大道 and 香格里拉
/// "时光之礼" — published with weekly departures for twelve weeks.
pub async fn seed_demo(inventory: &Inventory) -> anyhow::Result<()> {
    let today = shared::policy::china_today(Utc::now());
    for h in DEMO_HOMESTAYS {
        let (region, name) = (h.region, h.name);
        let created = inventory
            .create_homestay(CreateHomestay {
                idempotency_key: None,
                host_name: h.host.into(),
                host_id: None,
                region_code: RegionCode::parse(region)?,
                name: name.into(),
                name_en: h.name_en.into(),
                room_type: NewRoomType {
                    name: h.room.into(),
                    name_en: h.room_en.into(),
                    beds: h.beds,
                    max_guests: h.guests,
                    rooms: h.rooms,
                },
                details: HomestayDetails {
                    address: h.address.into(),
                    grade: h.grade,
                    amenities: ["热水", "暖气", "Wi-Fi", "停车", "农家饭"]
                        .map(String::from)
                        .to_vec(),
                    photos: Vec::new(),
                },
                cancellation_policy: None,
                unpublished: false,
                by: Principal::platform(),
            })
            .await?;
        inventory
            .set_room_calendar(SetRoomCalendar {
                room_type_id: created.room_type_id,
                from: today,
                to: today + Duration::days(90),
                rooms: None,
                price: Some(Fen::yuan(h.price)),
                closed: Some(false),
                min_stay: Some(1),
                by: Principal::platform(),
            })
            .await?;
        info!(homestay = %created.homestay_id, room_type = %created.room_type_id, name, "seeded a demonstration homestay");
        if region == "522631" {
            certify_demo(inventory, created.homestay_id.0).await?;
        }
    }
    for route in demo_routes()? {
        let title = route.title_zh.clone();
        let created = inventory.create_route(route).await?;
        // Saturdays, from the second one ahead, for twelve weeks.
        let days_to_saturday =
            (5 - i64::from(today.weekday().num_days_from_monday())).rem_euclid(7);
        let first = today + Duration::days(days_to_saturday + 7);
        for week in 0..12 {
            inventory
                .add_departure(AddDeparture {
                    idempotency_key: None,
                    route_id: created.route_id,
                    starts_on: first + Duration::weeks(week),
                    seats: 30,
                    price: None,
                    cutoff_days: 3,
                    by: Principal::platform(),
                })
                .await?;
        }
        inventory
            .set_route_status(SetRouteStatus {
                route_id: created.route_id,
                status: RouteStatus::Published,
                by: Principal::platform(),
            })
            .await?;
        if title.contains("首都—草原") {
            certify_demo(inventory, created.route_id.0).await?;
        }
        info!(route = %created.route_id, %title, "seeded a demonstration route");
    }
    Ok(())
}

/// A demonstration homestay with one room type.
struct DemoHomestay {
    region: &'static str,
    host: &'static str,
    name: &'static str,
    name_en: &'static str,
    address: &'static str,
    grade: Option<HomestayGrade>,
    room: &'static str,
    room_en: &'static str,
    beds: u32,
    guests: u32,
    rooms: u32,
    price: i64,
}

const DEMO_HOMESTAYS: [DemoHomestay; 3] = [
    DemoHomestay {
        region: "150430",
        host: "[演示] 敖汉旗宝国吐乡牧民合作社",
        name: "[演示] 敖汉草原蒙古包民宿",
        name_en: "[Demo] Aohan Grassland Yurt Homestay",
        address: "敖汉旗宝国吐乡",
        grade: Some(HomestayGrade::Silver),
        room: "蒙古包双床房",
        room_en: "Yurt, twin beds",
        beds: 2,
        guests: 2,
        rooms: 5,
        price: 380,
    },
    DemoHomestay {
        region: "522631",
        host: "[演示] 黎平县黄岗村村集体",
        name: "[演示] 黄岗侗寨美丽乡村民宿",
        name_en: "[Demo] Huanggang Dong Village Homestay",
        address: "黎平县双江镇黄岗村",
        grade: Some(HomestayGrade::Gold),
        room: "侗族木楼双床房",
        room_en: "Dong wooden house, twin beds",
        beds: 2,
        guests: 2,
        rooms: 6,
        price: 268,
    },
    DemoHomestay {
        region: "150929",
        host: "[演示] 四子王旗格根塔拉牧户",
        name: "[演示] 格根塔拉草原人家",
        name_en: "[Demo] Gegentala Grassland Family",
        address: "四子王旗格根塔拉草原旅游区",
        grade: None,
        room: "蒙古包家庭房",
        room_en: "Family yurt",
        beds: 3,
        guests: 4,
        rooms: 4,
        price: 420,
    },
];

/// Takes a demo listing through the whole certification procedure as the
/// platform. The seven-day public notice is recorded as already served
/// (demonstration data has no week to wait).
async fn certify_demo(inventory: &Inventory, listing_id: uuid::Uuid) -> anyhow::Result<()> {
    let platform = Principal::platform();
    let applied = inventory
        .apply_for_certification(ApplyForCertification {
            listing_id,
            statement: "[演示] 村集体经营，吸纳建档立卡脱贫户参与接待，收益按户分红".into(),
            evidence: Vec::new(),
            by: platform.clone(),
        })
        .await?;
    let advance = |step| AdvanceCertification {
        certification_id: applied.id,
        step,
        by: platform.clone(),
    };
    inventory
        .advance_certification(advance(CertificationStep::AcceptForPublicNotice {
            notice_days: 7,
        }))
        .await?;
    crate::storage::certification::end_notice_for_demo(
        &inventory.db,
        applied.id,
        shared::policy::china_today(Utc::now()),
    )
    .await?;
    inventory
        .advance_certification(advance(CertificationStep::Certify {
            valid_until: shared::policy::three_years_after(shared::policy::china_today(Utc::now())),
            resolution: None,
        }))
        .await?;
    Ok(())
}

fn demo_routes() -> anyhow::Result<Vec<CreateRoute>> {
    let r = RegionCode::parse;
    let day = |n: u32, title: &str, regions: Vec<RegionCode>| ItineraryDay {
        day: n,
        title: title.into(),
        title_en: String::new(),
        regions,
    };
    Ok(vec![
        CreateRoute {
            idempotency_key: None,
            host_name: "[演示] 克什克腾旗草原旅游专业合作社".into(),
            host_id: None,
            region_code: r("150425")?,
            title_zh: "[演示] 首都—草原 京蒙协作五日游".into(),
            title_en: "[Demo] Capital to Grassland: five days, Beijing to Chifeng".into(),
            description_zh: "京蒙协作精品线路：乘旅游专列从北京到赤峰，住牧民家，走克什克腾草原与敖汉旱作农业遗产地。".into(),
            description_en: "The Beijing–Inner Mongolia partnership route: a tourist train from Beijing to Chifeng, herders' homes, the Hexigten grassland and Aohan's dryland farming heritage.".into(),
            itinerary: vec![
                day(1, "北京—赤峰 旅游专列", vec![r("110105")?, r("150400")?]),
                day(2, "克什克腾旗 贡格尔草原 牧户家访", vec![r("150425")?]),
                day(3, "阿斯哈图石林 达里诺尔湖", vec![r("150425")?]),
                day(4, "敖汉旗 旱作农业系统 兴隆洼遗址", vec![r("150430")?]),
                day(5, "赤峰—北京", vec![r("150400")?, r("110105")?]),
            ],
            price: Fen::yuan(2_980),
            cancellation_policy: None,
            by: Principal::platform(),
        },
        CreateRoute {
            idempotency_key: None,
            host_name: "[演示] 四子王旗草原自驾营地".into(),
            host_id: None,
            region_code: r("150929")?,
            title_zh: "[演示] 环京津冀千里草原大道 自驾四日".into(),
            title_en: "[Demo] The Thousand-Li Grassland Avenue: a four-day self-drive".into(),
            description_zh: "沿环京津冀千里草原大道自驾，经乌兰察布的凉城、卓资到四子王旗格根塔拉草原。".into(),
            description_en: "Drive the grassland avenue around Beijing, Tianjin and Hebei through Ulanqab's Liangcheng and Zhuozi to the Gegentala grassland of Siziwang Banner.".into(),
            itinerary: vec![
                day(1, "北京—凉城县 岱海", vec![r("150925")?]),
                day(2, "卓资县 辉腾锡勒草原", vec![r("150921")?]),
                day(3, "四子王旗 格根塔拉草原 那达慕", vec![r("150929")?]),
                day(4, "四子王旗—北京", vec![r("150929")?]),
            ],
            price: Fen::yuan(1_680),
            cancellation_policy: None,
            by: Principal::platform(),
        },
        CreateRoute {
            idempotency_key: None,
            host_name: "[演示] 香格里拉市藏族村寨旅游合作社".into(),
            host_id: None,
            region_code: r("533401")?,
            title_zh: "[演示] 香格里拉“时光之礼”六日精品线路".into(),
            title_en: "[Demo] Shangri-La \"Time's Gift\": six days".into(),
            description_zh: "普达措、独克宗古城、德钦梅里雪山；住藏族村寨民宿，部分收入捐入公益基金。".into(),
            description_en: "Pudacuo, the old town of Dukezong and the Meili Snow Mountains of Dêqên, staying in Tibetan village homes; a share of every sale goes to the welfare fund.".into(),
            itinerary: vec![
                day(1, "抵达香格里拉 独克宗古城", vec![r("533401")?]),
                day(2, "普达措国家公园", vec![r("533401")?]),
                day(3, "香格里拉—德钦 飞来寺", vec![r("533422")?]),
                day(4, "梅里雪山 雨崩村", vec![r("533422")?]),
                day(5, "德钦—香格里拉 藏族村寨", vec![r("533401")?]),
                day(6, "返程", vec![r("533401")?]),
            ],
            price: Fen::yuan(4_680),
            cancellation_policy: Some(vec![
                shared::policy::PolicyTier {
                    days_before: 14,
                    refund_percent: 100,
                },
                shared::policy::PolicyTier {
                    days_before: 7,
                    refund_percent: 50,
                },
            ]),
            by: Principal::platform(),
        },
    ])
}
