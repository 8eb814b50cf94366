//! `edmips inspect`: layer counts and totals of the named configurations (decisions.md R17),
//! the README's normalised bits, the JSON form, and its errors.

use std::process::Command;

fn inspect(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_edmips")).arg("inspect").args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn search_configurations_report_layers_totals_and_the_initial_complexity() {
    for (name, layers, sp, loss) in [
        ("mixres18_w1234a234", 19, "1695.547", "110.0000"),
        ("mixres50_w1234a234", 52, "3969.122", "2317.4998"),
        ("mixgoogle_w1234a234", 56, "1463.634", "854.5901"),
        ("mixinception_w1234a234", 93, "5763.155", "211.2548"),
    ] {
        let (ok, out, err) = inspect(&["-a", name]);
        assert!(ok, "{name}: {err}");
        assert!(out.contains(&format!("searchable layers: {layers}\n")), "{name}: {out}");
        assert!(out.contains(&format!("sum size_product:  {sp} M")), "{name}: {out}");
        assert!(out.contains(&format!("complexity loss at init (bitops): {loss}")), "{name}: {out}");
        assert!(out.contains("E[abit] = 3.0000, E[wbit] = 2.5000"), "{name}: {out}");
    }
}

#[test]
fn fixed_configurations_report_the_normalised_bit() {
    for (name, bit) in [
        ("quantres18_pretrained_cfg", "1.992"),
        ("quantres50_pretrained_cfg", "2.007"),
        ("quantgoogle_pretrained_cfg", "1.994"),
        ("quantinception_pretrained_cfg", "1.982"),
        ("quantres18_2w2a", "2.000"),
    ] {
        let (ok, out, err) = inspect(&["-a", name]);
        assert!(ok, "{name}: {err}");
        assert!(out.trim_end().ends_with(&format!("bit: {bit}")), "{name}: {out}");
    }
    let (ok, out, _) = inspect(&["-a", "quantres18_pretrained_cfg", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["layers"].as_array().unwrap().len(), 19);
    assert_eq!(v["layers"][6]["wbit"], 4);
    assert_eq!(v["layers"][6]["abit"], 4);
    assert_eq!(v["totals"]["headline"]["name"], "bit");
    assert!((v["totals"]["headline"]["value"].as_f64().unwrap() - 1.992409838249285).abs() < 1e-9);
}

#[test]
fn arch_file_configurations_need_and_read_an_architecture() {
    let (ok, _, err) = inspect(&["-a", "quanttiny_cfg"]);
    assert!(!ok && err.contains("pass --ac ARCH_FILE"), "{err}");
    let dir = std::env::temp_dir().join(format!("edmips-inspect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.json");
    std::fs::write(&good, "[[2,3],[1,2],[4,4],[3,2],[2,2]]").unwrap();
    let (ok, out, err) = inspect(&["-a", "quanttiny_cfg", "--ac", good.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("layer2.0.downsample.0") && out.contains("mode fixed"), "{out}");
    let bad = dir.join("bad.json");
    std::fs::write(&bad, "[[2,3],[1,2],[4,4],[3,9],[2,2]]").unwrap();
    let (ok, _, err) = inspect(&["-a", "quanttiny_cfg", "--ac", bad.to_str().unwrap()]);
    assert!(!ok && err.contains("layer 3 `layer2.0.conv2`") && err.contains("bad.json"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_unknown_configuration_lists_the_known_ones() {
    let (ok, _, err) = inspect(&["-a", "mixres19_w1234a234"]);
    assert!(!ok && err.contains("did you mean") && err.contains("mixres18_w1234a234"), "{err}");
}
