/*
 * vigil's default YARA rules, compiled by the `signature` policy (YARA-X) unless `noDefaultRules` is set.
 * They are scanned against the private memory of every guest process (heap, stack, anonymous and writable
 * maps, deleted or memfd-backed files) and against kernel module memory.
 *
 * Each rule carries meta the policy reports:
 *   description  what the match means, in one sentence
 *   technique    the MITRE ATT&CK technique id the finding is filed under
 *   severity     info | low | medium | high | critical
 *
 * A clean guest must match nothing: strings here are specific enough not to occur in common userlands
 * (busybox, glibc, coreutils) or in the Linux kernel. Add your own rules in other files (option `rules`).
 */

rule vigil_test_marker
{
    meta:
        description = "vigil's harmless test marker (an EICAR for memory scanners), planted by the lab's yara-string attack"
        technique = "T1027"
        severity = "high"
        reference = "lab/attacks/README.md"
    strings:
        $marker = "VIGIL-TEST-MALWARE-SIGNATURE-5f3a"
    condition:
        $marker
}

rule linux_mirai_busybox_probe
{
    meta:
        description = "Mirai-family IoT bot: the busybox probe its loader runs after a telnet login and the applet-not-found answer it waits for"
        technique = "T1110.001"
        severity = "high"
        reference = "https://github.com/jgamblin/Mirai-Source-Code (loader/src/server.c, bot/table.c)"
    strings:
        // Mirai's own names and those of common forks (the original source uses ECCHI).
        $probe_mirai = "/bin/busybox MIRAI"
        $answer_mirai = "MIRAI: applet not found"
        $probe_ecchi = "/bin/busybox ECCHI"
        $answer_ecchi = "ECCHI: applet not found"
        // Any fork: an upper-case fake applet name, probed and expected back, in the same process.
        $probe_any = /\/bin\/busybox [A-Z0-9]{4,16}[\x00\r\n;]/
        $answer_any = /[\x00\r\n ][A-Z0-9]{4,16}: applet not found/
    condition:
        any of ($probe_mirai, $answer_mirai, $probe_ecchi, $answer_ecchi) or ($probe_any and $answer_any)
}

rule linux_xmrig_miner
{
    meta:
        description = "XMRig cryptocurrency miner: its user agent or its developers' donation pool"
        technique = "T1496"
        severity = "high"
        reference = "https://github.com/xmrig/xmrig (src/donate.h, src/base/kernel/Platform.cpp)"
    strings:
        $ua = /XMRig\/[0-9]{1,2}\.[0-9]{1,3}\.[0-9]{1,3}/
        $donate_v2 = "donate.v2.xmrig.com"
        $donate_ssl = "donate.ssl.xmrig.com"
    condition:
        any of them
}

rule cryptominer_stratum_config
{
    meta:
        description = "a cryptocurrency miner's configuration: a Stratum mining-pool URL with miner settings or a miner's identity"
        technique = "T1496"
        severity = "high"
        reference = "Stratum mining protocol; XMRig config.json keys"
    strings:
        $pool = /stratum\+(tcp|ssl|tls):\/\/[A-Za-z0-9._-]{3,253}:[0-9]{2,5}/
        // XMRig / cpuminer configuration keys and command-line options.
        $cfg_donate = "\"donate-level\""
        $cfg_donate_opt = "--donate-level"
        $cfg_rigid = "\"rig-id\""
        $cfg_nicehash = "\"nicehash\""
        $cfg_maxcpu = "\"max-cpu-usage\""
        $cfg_randomx = "\"randomx\""
        $cfg_algo = /"algo"\s*:\s*"(rx|cn|argon2|kawpow|ghostrider)\//
        // The miner itself.
        $miner_xmrig = "xmrig" nocase
        $miner_cpuminer = "cpuminer"
        $miner_minerd = "minerd"
    condition:
        $pool and (any of ($cfg_*) or any of ($miner_*))
}
