//! The demo's people: one hub account per role, with passwords made up at the demo's first
//! start and kept in `demo-logins.txt` (0600) in its data folder, so that a demo run again
//! on the same folder prints the same logins. The building roles are granted at building
//! `b1`, so those accounts reach its edge by sync and log in there too, hub or no hub.

use std::path::Path;

use accounts::audit::Mirror;
use accounts::auth::{Source, manage};
use anyhow::Context as _;
use park_model::identity::Grant;

/// Username, role at its scope, and what the account is for.
const PEOPLE: [(&str, &str, &str); 10] = [
    (
        "admin",
        "operator_admin@operator",
        "the operator: users, edges (sets up TOTP at first login)",
    ),
    (
        "manager",
        "park_manager@park:demo-park",
        "the park's manager: master data, personal data, audit",
    ),
    (
        "finance",
        "finance@park:demo-park",
        "finance: bill runs, payments (sets up TOTP at first login)",
    ),
    (
        "finance2",
        "finance@park:demo-park",
        "a second finance user, who approves refunds (sets up TOTP)",
    ),
    (
        "leasing",
        "leasing@park:demo-park",
        "the leasing office: leads and contracts",
    ),
    (
        "security",
        "security_officer@building:demo-park/b1",
        "building b1's security: doors, cards, plate reviews",
    ),
    (
        "engineer",
        "facility_engineer@building:demo-park/b1",
        "building b1's facility engineer: points, alarms, rules, doors",
    ),
    (
        "inspector",
        "inspector@building:demo-park/b1",
        "an inspector of building b1: reads",
    ),
    (
        "acme-admin",
        "enterprise_admin@enterprise:demo-park/acme",
        "Acme Robotics' administrator: its own people, bills, payments, invoices",
    ),
    (
        "acme-staff",
        "enterprise_user@enterprise:demo-park/acme",
        "an Acme Robotics employee",
    ),
];

/// One demo login.
pub struct Login {
    pub username: String,
    pub password: String,
    pub grant: String,
    pub about: String,
}

/// Makes the demo accounts in the hub's database (once), and returns their logins.
pub fn ensure(hub_db: &park_db::Target, data_dir: &Path) -> anyhow::Result<Vec<Login>> {
    let file = data_dir.join("demo-logins.txt");
    let mut logins = Vec::new();
    if let Ok(text) = std::fs::read_to_string(&file) {
        for line in text.lines() {
            let mut f = line.splitn(4, '\t');
            if let (Some(u), Some(p), Some(g), Some(a)) = (f.next(), f.next(), f.next(), f.next()) {
                logins.push(Login {
                    username: u.into(),
                    password: p.into(),
                    grant: g.into(),
                    about: a.into(),
                });
            }
        }
    }
    if logins.len() == PEOPLE.len() {
        return Ok(logins);
    }
    let handle = cloud_hub::store::open_db(hub_db)?;
    let c = handle.conn();
    let actor = manage::host_actor("demo");
    logins.clear();
    for (username, grant, about) in PEOPLE {
        let password = made_up()?;
        let grants: Vec<Grant> = vec![grant.parse()?];
        let verifier = manage::verifier_for(
            username,
            &password,
            park_model::identity::password::Cost::DEFAULT,
        )?;
        match manage::find(&c, username)? {
            Some((id, _, _)) => {
                manage::set_verifier(&c, &actor, Mirror::None, Source::Hub, &id, &verifier)?
            }
            None => {
                manage::create(
                    &c,
                    &actor,
                    Mirror::None,
                    Source::Hub,
                    manage::NewAccount {
                        username,
                        display_name: about.split(':').next().unwrap_or(username),
                        verifier,
                        grants: &grants,
                        department: None,
                    },
                )?;
            }
        }
        logins.push(Login {
            username: username.into(),
            password,
            grant: grant.into(),
            about: about.into(),
        });
    }
    let text: String = logins
        .iter()
        .map(|l| format!("{}\t{}\t{}\t{}\n", l.username, l.password, l.grant, l.about))
        .collect();
    accounts::auth::write_private(&file, &text)
        .with_context(|| format!("cannot keep the demo logins in {}", file.display()))?;
    Ok(logins)
}

/// A password for a demo account: 80 random bits, readable aloud.
fn made_up() -> anyhow::Result<String> {
    let key = accounts::auth::new_key()?;
    let t = data_encoding::BASE32_NOPAD
        .encode(&key[..10])
        .to_lowercase();
    Ok(format!(
        "{}-{}-{}-{}",
        &t[0..4],
        &t[4..8],
        &t[8..12],
        &t[12..16]
    ))
}
