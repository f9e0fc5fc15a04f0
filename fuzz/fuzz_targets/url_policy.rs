//! The URL and address policy: whatever a client writes as an image URL, a URL the policy accepts
//! (with an empty allow-list) never names a forbidden address literally.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use livecheck::fetch::policy::{check_url, classify_ip, host_for_log};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(ip) = text.parse::<IpAddr>() {
        let _ = classify_ip(ip);
    }
    let Ok(url) = url::Url::parse(text) else {
        return;
    };
    let _ = host_for_log(&url);
    if check_url(&url, &[]).is_ok() {
        match url.host() {
            Some(url::Host::Ipv4(ip)) => assert!(classify_ip(IpAddr::V4(ip)).is_none(), "{url}"),
            Some(url::Host::Ipv6(ip)) => assert!(classify_ip(IpAddr::V6(ip)).is_none(), "{url}"),
            Some(url::Host::Domain(_)) => {}
            None => panic!("accepted a URL without a host: {url}"),
        }
    }
});
