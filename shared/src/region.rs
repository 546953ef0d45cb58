//! Regions: GB/T 2260 administrative division codes and the reference table.
//!
//! Containment follows the code (150430 敖汉旗 lies in 150400 赤峰市, in
//! 150000 内蒙古自治区), so any service can decide "is X inside Y" without a
//! call. The table here is a real subset: Beijing and its 16 districts,
//! Inner Mongolia's 31 national poverty banners and counties (those of the
//! 京蒙 cooperation) with their leagues and cities and a few others, and the
//! counties other pairings in the reports name.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A six-digit GB/T 2260 code, validated at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RegionCode(u32);

/// Administrative level, read from the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RegionLevel {
    /// 省 / 自治区 / 直辖市
    Province,
    /// 地级市 / 盟 / 自治州
    Prefecture,
    /// 县 / 旗 / 区 / 县级市
    County,
}

/// Why a string is not a region code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an administrative division code (GB/T 2260: six digits, 11 to 82 first)")]
pub struct BadRegionCode(pub String);

impl RegionCode {
    /// Parses and validates a code: six digits, a plausible province prefix.
    pub fn parse(s: &str) -> Result<RegionCode, BadRegionCode> {
        let bad = || BadRegionCode(s.to_owned());
        if s.len() != 6 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: u32 = s.parse().map_err(|_| bad())?;
        let province = n / 10_000;
        if !(11..=82).contains(&province) {
            return Err(bad());
        }
        Ok(RegionCode(n))
    }

    /// The numeric value.
    pub fn get(self) -> u32 {
        self.0
    }

    /// Province, prefecture or county, by the code's trailing zeros.
    pub fn level(self) -> RegionLevel {
        if self.0.is_multiple_of(10_000) {
            RegionLevel::Province
        } else if self.0.is_multiple_of(100) {
            RegionLevel::Prefecture
        } else {
            RegionLevel::County
        }
    }

    /// True when `other` is this region or lies inside it.
    pub fn contains(self, other: RegionCode) -> bool {
        match self.level() {
            RegionLevel::Province => self.0 / 10_000 == other.0 / 10_000,
            RegionLevel::Prefecture => self.0 / 100 == other.0 / 100,
            RegionLevel::County => self == other,
        }
    }

    /// The leading digits every code inside this region shares (`15` for
    /// 内蒙古, `1504` for 赤峰市, all six for a county): `LIKE '<prefix>%'`
    /// selects the sub-tree.
    pub fn code_prefix(self) -> String {
        let s = self.to_string();
        match self.level() {
            RegionLevel::Province => s[..2].to_owned(),
            RegionLevel::Prefecture => s[..4].to_owned(),
            RegionLevel::County => s,
        }
    }

    /// This region's ancestors by code, nearest first (prefecture, then province).
    pub fn ancestors(self) -> Vec<RegionCode> {
        let mut out = Vec::with_capacity(2);
        if self.level() == RegionLevel::County {
            out.push(RegionCode(self.0 / 100 * 100));
        }
        if self.level() != RegionLevel::Province {
            out.push(RegionCode(self.0 / 10_000 * 10_000));
        }
        out
    }
}

impl fmt::Display for RegionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:06}", self.0)
    }
}

impl FromStr for RegionCode {
    type Err = BadRegionCode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RegionCode::parse(s)
    }
}

impl TryFrom<String> for RegionCode {
    type Error = BadRegionCode;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        RegionCode::parse(&s)
    }
}

impl From<RegionCode> for String {
    fn from(c: RegionCode) -> String {
        c.to_string()
    }
}

/// One row of the reference table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    /// GB/T 2260 code.
    pub code: RegionCode,
    /// Chinese name, e.g. 敖汉旗.
    pub name_zh: String,
    /// English name, e.g. Aohan Banner.
    pub name_en: String,
    /// The parent in the table (Beijing's districts hang directly under 110000).
    pub parent: Option<RegionCode>,
    /// One of the 832 national poverty counties.
    pub poverty_county: bool,
    /// The year it was lifted out of poverty, where it was one.
    pub lifted_year: Option<i32>,
}

// (code, zh, en, parent, lifted year for a national poverty county)
type Row = (u32, &'static str, &'static str, u32, Option<i32>);

// The lifted years are the years of the provinces' announcements. Inner
// Mongolia's 31 national poverty banners and counties: the last 20 were
// announced lifted on 2020-03-04 (内蒙古自治区人民政府公告, the list is in
// the notice); the other 11 earlier, given here as 2019 (the year of their
// announcements is not in our sources). The table is reference data and is
// marked as such in docs/.
const TABLE: &[Row] = &[
    (110000, "北京市", "Beijing", 0, None),
    (110101, "东城区", "Dongcheng District", 110000, None),
    (110102, "西城区", "Xicheng District", 110000, None),
    (110105, "朝阳区", "Chaoyang District", 110000, None),
    (110106, "丰台区", "Fengtai District", 110000, None),
    (110107, "石景山区", "Shijingshan District", 110000, None),
    (110108, "海淀区", "Haidian District", 110000, None),
    (110109, "门头沟区", "Mentougou District", 110000, None),
    (110111, "房山区", "Fangshan District", 110000, None),
    (110112, "通州区", "Tongzhou District", 110000, None),
    (110113, "顺义区", "Shunyi District", 110000, None),
    (110114, "昌平区", "Changping District", 110000, None),
    (110115, "大兴区", "Daxing District", 110000, None),
    (110116, "怀柔区", "Huairou District", 110000, None),
    (110117, "平谷区", "Pinggu District", 110000, None),
    (110118, "密云区", "Miyun District", 110000, None),
    (110119, "延庆区", "Yanqing District", 110000, None),
    (
        150000,
        "内蒙古自治区",
        "Inner Mongolia Autonomous Region",
        0,
        None,
    ),
    (150100, "呼和浩特市", "Hohhot City", 150000, None),
    (150125, "武川县", "Wuchuan County", 150100, Some(2019)),
    (150400, "赤峰市", "Chifeng City", 150000, None),
    (
        150421,
        "阿鲁科尔沁旗",
        "Ar Horqin Banner",
        150400,
        Some(2020),
    ),
    (150422, "巴林左旗", "Bairin Left Banner", 150400, Some(2020)),
    (
        150423,
        "巴林右旗",
        "Bairin Right Banner",
        150400,
        Some(2019),
    ),
    (150424, "林西县", "Linxi County", 150400, Some(2019)),
    (150425, "克什克腾旗", "Hexigten Banner", 150400, None),
    (150426, "翁牛特旗", "Ongniud Banner", 150400, Some(2020)),
    (150428, "喀喇沁旗", "Harqin Banner", 150400, Some(2019)),
    (150429, "宁城县", "Ningcheng County", 150400, Some(2019)),
    (150430, "敖汉旗", "Aohan Banner", 150400, Some(2020)),
    (150500, "通辽市", "Tongliao City", 150000, None),
    (
        150521,
        "科尔沁左翼中旗",
        "Horqin Left Middle Banner",
        150500,
        Some(2020),
    ),
    (
        150522,
        "科尔沁左翼后旗",
        "Horqin Left Rear Banner",
        150500,
        Some(2019),
    ),
    (150524, "库伦旗", "Hure Banner", 150500, Some(2020)),
    (150525, "奈曼旗", "Naiman Banner", 150500, Some(2020)),
    (150600, "鄂尔多斯市", "Ordos City", 150000, None),
    (150700, "呼伦贝尔市", "Hulunbuir City", 150000, None),
    (
        150722,
        "莫力达瓦达斡尔族自治旗",
        "Morin Dawa Daur Autonomous Banner",
        150700,
        Some(2020),
    ),
    (
        150723,
        "鄂伦春自治旗",
        "Oroqen Autonomous Banner",
        150700,
        Some(2020),
    ),
    (150900, "乌兰察布市", "Ulanqab City", 150000, None),
    (150921, "卓资县", "Zhuozi County", 150900, Some(2020)),
    (150922, "化德县", "Huade County", 150900, Some(2020)),
    (150923, "商都县", "Shangdu County", 150900, Some(2020)),
    (150924, "兴和县", "Xinghe County", 150900, Some(2020)),
    (150925, "凉城县", "Liangcheng County", 150900, None),
    (
        150926,
        "察哈尔右翼前旗",
        "Qahar Right Front Banner",
        150900,
        Some(2020),
    ),
    (
        150927,
        "察哈尔右翼中旗",
        "Qahar Right Middle Banner",
        150900,
        Some(2020),
    ),
    (
        150928,
        "察哈尔右翼后旗",
        "Qahar Right Rear Banner",
        150900,
        Some(2019),
    ),
    (150929, "四子王旗", "Siziwang Banner", 150900, Some(2020)),
    (152200, "兴安盟", "Hinggan League", 150000, None),
    (
        152221,
        "科尔沁右翼前旗",
        "Horqin Right Front Banner",
        152200,
        Some(2020),
    ),
    (
        152222,
        "科尔沁右翼中旗",
        "Horqin Right Middle Banner",
        152200,
        Some(2019),
    ),
    (152223, "扎赉特旗", "Jalaid Banner", 152200, Some(2019)),
    (152224, "突泉县", "Tuquan County", 152200, Some(2020)),
    (152202, "阿尔山市", "Arxan City", 152200, Some(2019)),
    (152500, "锡林郭勒盟", "Xilingol League", 150000, None),
    (
        152524,
        "苏尼特右旗",
        "Sonid Right Banner",
        152500,
        Some(2019),
    ),
    (152527, "太仆寺旗", "Taibus Banner", 152500, Some(2020)),
    (
        152529,
        "正镶白旗",
        "Plain and Bordered White Banner",
        152500,
        Some(2020),
    ),
    (440000, "广东省", "Guangdong Province", 0, None),
    (440100, "广州市", "Guangzhou City", 440000, None),
    (440105, "海珠区", "Haizhu District", 440100, None),
    (510000, "四川省", "Sichuan Province", 0, None),
    (511100, "乐山市", "Leshan City", 510000, None),
    (
        511133,
        "马边彝族自治县",
        "Mabian Yi Autonomous County",
        511100,
        Some(2020),
    ),
    (
        513400,
        "凉山彝族自治州",
        "Liangshan Yi Autonomous Prefecture",
        510000,
        None,
    ),
    (513437, "雷波县", "Leibo County", 513400, Some(2020)),
    (520000, "贵州省", "Guizhou Province", 0, None),
    (
        522600,
        "黔东南苗族侗族自治州",
        "Qiandongnan Miao and Dong Autonomous Prefecture",
        520000,
        None,
    ),
    (522631, "黎平县", "Liping County", 522600, Some(2019)),
    (
        522700,
        "黔南布依族苗族自治州",
        "Qiannan Buyei and Miao Autonomous Prefecture",
        520000,
        None,
    ),
    (522702, "福泉市", "Fuquan City", 522700, None),
    (522725, "瓮安县", "Weng'an County", 522700, Some(2019)),
    (530000, "云南省", "Yunnan Province", 0, None),
    (530800, "普洱市", "Pu'er City", 530000, None),
    (
        530827,
        "孟连傣族拉祜族佤族自治县",
        "Menglian Dai, Lahu and Va Autonomous County",
        530800,
        Some(2019),
    ),
    (
        530829,
        "西盟佤族自治县",
        "Ximeng Va Autonomous County",
        530800,
        Some(2019),
    ),
    (
        533400,
        "迪庆藏族自治州",
        "Dêqên Tibetan Autonomous Prefecture",
        530000,
        None,
    ),
    (533401, "香格里拉市", "Shangri-La City", 533400, Some(2018)),
    (533422, "德钦县", "Dêqên County", 533400, Some(2019)),
    (
        650000,
        "新疆维吾尔自治区",
        "Xinjiang Uygur Autonomous Region",
        0,
        None,
    ),
    (653100, "喀什地区", "Kashgar Prefecture", 650000, None),
    (653121, "疏附县", "Shufu County", 653100, Some(2019)),
];

/// The reference table of regions Duikou ships with.
pub fn reference_regions() -> Vec<Region> {
    TABLE
        .iter()
        .map(|&(code, zh, en, parent, lifted)| Region {
            code: RegionCode(code),
            name_zh: zh.to_owned(),
            name_en: en.to_owned(),
            parent: (parent != 0).then_some(RegionCode(parent)),
            poverty_county: lifted.is_some(),
            lifted_year: lifted,
        })
        .collect()
}

/// Whether `code` is in the reference table (a region Duikou knows).
pub fn is_known(code: RegionCode) -> bool {
    TABLE.iter().any(|&(c, ..)| c == code.0)
}

/// Looks a code up in the reference table.
pub fn reference_region(code: RegionCode) -> Option<Region> {
    reference_regions().into_iter().find(|r| r.code == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(s: &str) -> RegionCode {
        RegionCode::parse(s).expect("valid code")
    }

    #[test]
    fn a_code_prefix_covers_the_sub_tree() {
        assert_eq!(code("150000").code_prefix(), "15");
        assert_eq!(code("150400").code_prefix(), "1504");
        assert_eq!(code("150430").code_prefix(), "150430");
    }

    #[test]
    fn containment_follows_the_code() {
        assert!(code("150000").contains(code("150430")));
        assert!(code("150400").contains(code("150430")));
        assert!(code("150430").contains(code("150430")));
        assert!(!code("150400").contains(code("150525")));
        assert!(!code("110108").contains(code("110000")));
        assert_eq!(
            code("150430").ancestors(),
            vec![code("150400"), code("150000")]
        );
    }

    #[test]
    fn bad_codes_are_refused() {
        for s in ["15043", "1504300", "15043a", "990000", "000000", ""] {
            assert!(RegionCode::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn every_parent_in_the_table_exists_and_contains_its_child() {
        let all = reference_regions();
        for r in &all {
            if let Some(p) = r.parent {
                assert!(all.iter().any(|x| x.code == p), "{} parent {p}", r.code);
                assert!(p.contains(r.code));
            }
        }
        assert_eq!(
            all.iter()
                .filter(|r| r.parent == Some(code("110000")))
                .count(),
            16
        );
    }
}
