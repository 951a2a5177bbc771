//! The per-user Appx refusal names every package with its user and gives
//! the PowerShell commands that fix the reference machine.

use std::fs;

use reseal::backend::dir::DirBackend;
use reseal::generalize::generalize;
use reseal::hive::Hive;
use reseal::options::GeneralizeOptions;
use reseal::report::Outcome;
use reseal_testkit::build_windows_root;

const STORE: &str = r"Microsoft\Windows\CurrentVersion\Appx\AppxAllUserStore";
const ALICE: &str = "S-1-5-21-1004336348-1177238915-682003330-1002";
const BOB: &str = "S-1-5-21-1004336348-1177238915-682003330-1001";

#[test]
fn every_package_is_named_with_its_user_and_command() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    build_windows_root(&root, Some("appx-per-user")).unwrap();
    let sw = root.join("Windows/System32/config/SOFTWARE");
    let mut h = Hive::from_bytes("SOFTWARE", fs::read(&sw).unwrap()).unwrap();
    // Bob has a newer Calculator than the provisioned one, and 24 tools.
    let calc = "Microsoft.WindowsCalculator_11.2307.4.0_x64__8wekyb3d8bbwe";
    h.create_key(&format!(r"{STORE}\{BOB}\{calc}")).unwrap();
    let tools: Vec<String> = (0..24)
        .map(|i| format!("Fabrikam.Tool{i}_1.0.{i}.0_x64__zyxwvutsrqpon"))
        .collect();
    for t in &tools {
        h.create_key(&format!(r"{STORE}\{BOB}\{t}")).unwrap();
    }
    fs::write(&sw, h.to_bytes()).unwrap();

    let mut b = DirBackend::open(&root).unwrap();
    let report = generalize(&mut b, &GeneralizeOptions::default()).unwrap();
    assert_eq!(report.outcome, Outcome::Refused);
    let f = report.installs[0]
        .findings
        .iter()
        .find(|f| f.id == "appx-per-user")
        .expect("appx-per-user finding");
    let notes = "Contoso.Notes_1.4.2.0_x64__8abc5d3e2f1g0";
    assert!(
        f.message.contains(&format!("{notes} (user {ALICE})")),
        "{}",
        f.message
    );
    assert!(
        f.message.contains(&format!("{calc} (user {BOB})")),
        "{}",
        f.message
    );
    for t in &tools {
        assert!(f.message.contains(t.as_str()), "{t} missing: {}", f.message);
        assert!(
            f.fix
                .contains(&format!("Remove-AppxPackage -Package '{t}' -User '{BOB}'")),
            "{}",
            f.fix
        );
    }
    assert!(
        f.fix.contains(&format!(
            "Remove-AppxPackage -Package '{notes}' -User '{ALICE}'"
        )),
        "{}",
        f.fix
    );
    // The provisioned Calculator (another version of Bob's) may be removed
    // too; the unrelated packages have no provisioned copy.
    assert!(
        f.fix.contains(
            "Remove-AppxProvisionedPackage -Online -PackageName 'Microsoft.WindowsCalculator_10.2103.8.0_x64__8wekyb3d8bbwe'"
        ),
        "{}",
        f.fix
    );
    assert_eq!(
        f.fix.matches("Remove-AppxProvisionedPackage").count(),
        1,
        "{}",
        f.fix
    );
    assert!(f.fix.contains("-AllUsers"), "{}", f.fix);
}
