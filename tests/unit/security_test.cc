// Certificates, join tokens and admin signatures (src/security).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <sys/stat.h>

#include "security/admin_auth.h"
#include "security/certs.h"
#include "security/join_tokens.h"
#include "security/tls_files.h"
#include "temp_dir.h"

namespace wormhole {
namespace {

constexpr int64_t kDay = 86400;

struct Ca {
  std::string key, cert;
  Ca(const std::string& network = "net") {
    std::string error;
    EXPECT_TRUE(certs::create_ca(network, 365 * kDay, &key, &cert, &error)) << error;
  }
};

std::string csr_for(const std::string& key, const std::string& network, const std::string& name, uint64_t id) {
  std::string csr, error;
  EXPECT_TRUE(certs::make_csr(key, certs::Identity{network, name, id, ""}, &csr, &error)) << error;
  return csr;
}

TEST(Certs, IssuedCertificateNamesThePodAndVerifiesAgainstItsCaOnly) {
  Ca ca, other;
  std::string key, error, cert;
  ASSERT_TRUE(certs::create_key(&key, &error)) << error;
  certs::Identity who;
  ASSERT_TRUE(certs::sign_csr(ca.key, ca.cert, csr_for(key, "net", "pod-b", 0xb0b), "net", -60, kDay, &cert, &who,
                              &error))
      << error;
  EXPECT_EQ(who.pod_name, "pod-b");
  EXPECT_EQ(who.pod_id, 0xb0bu);
  certs::Identity read;
  ASSERT_TRUE(certs::read_cert(cert, &read, &error)) << error;
  EXPECT_EQ(read.network, "net");
  EXPECT_EQ(read.pod_name, "pod-b");
  EXPECT_EQ(read.pod_id, 0xb0bu);
  EXPECT_EQ(read.key_fingerprint, who.key_fingerprint);
  EXPECT_EQ(read.key_fingerprint.size(), 64u);
  EXPECT_TRUE(certs::verify_cert(ca.cert, cert, &error)) << error;
  EXPECT_FALSE(certs::verify_cert(other.cert, cert, &error));
  EXPECT_TRUE(certs::key_matches_cert(key, cert));
  std::string other_key;
  ASSERT_TRUE(certs::create_key(&other_key, &error));
  EXPECT_FALSE(certs::key_matches_cert(other_key, cert));
  EXPECT_GT(certs::seconds_left(cert), kDay - 120);
  EXPECT_EQ(certs::cert_fingerprint(ca.cert).size(), 64u);
  EXPECT_NE(certs::cert_fingerprint(ca.cert), certs::cert_fingerprint(other.cert));
}

TEST(Certs, ExpiredAndNotYetValidCertificatesDoNotVerify) {
  Ca ca;
  std::string key, error, expired, future;
  ASSERT_TRUE(certs::create_key(&key, &error));
  certs::Identity who;
  ASSERT_TRUE(certs::sign_csr(ca.key, ca.cert, csr_for(key, "net", "a", 1), "net", -2 * kDay, kDay, &expired, &who,
                              &error));
  EXPECT_FALSE(certs::verify_cert(ca.cert, expired, &error));
  EXPECT_NE(error.find("expired"), std::string::npos) << error;
  EXPECT_LT(certs::seconds_left(expired), 0);
  ASSERT_TRUE(certs::sign_csr(ca.key, ca.cert, csr_for(key, "net", "a", 1), "net", kDay, kDay, &future, &who, &error));
  EXPECT_FALSE(certs::verify_cert(ca.cert, future, &error));
}

TEST(Certs, RequestsForAnotherNetworkOrMalformedAreRefused) {
  Ca ca;
  std::string key, error, cert;
  ASSERT_TRUE(certs::create_key(&key, &error));
  certs::Identity who;
  EXPECT_FALSE(certs::sign_csr(ca.key, ca.cert, csr_for(key, "elsewhere", "a", 1), "net", -60, kDay, &cert, &who,
                               &error));
  EXPECT_NE(error.find("another network"), std::string::npos) << error;
  // Pod id 0 is no pod.
  EXPECT_FALSE(certs::sign_csr(ca.key, ca.cert, csr_for(key, "net", "a", 0), "net", -60, kDay, &cert, &who, &error));
  // Garbage, truncation and a huge input: refused, no crash.
  const std::string good = csr_for(key, "net", "a", 1);
  for (const std::string& bad : {std::string(), std::string("garbage"), good.substr(0, good.size() / 2),
                                 std::string(certs::kMaxPemBytes + 1, 'A'),
                                 "-----BEGIN CERTIFICATE REQUEST-----\n" + std::string(20000, 'A') +
                                     "\n-----END CERTIFICATE REQUEST-----\n"}) {
    EXPECT_FALSE(certs::read_csr(bad, &who, &error));
    EXPECT_FALSE(certs::sign_csr(ca.key, ca.cert, bad, "net", -60, kDay, &cert, &who, &error));
    EXPECT_FALSE(certs::read_cert(bad, &who, &error));
    EXPECT_FALSE(certs::verify_cert(ca.cert, bad, &error));
    EXPECT_EQ(certs::cert_fingerprint(bad), "");
  }
  // A CSR whose signature does not match its key (a byte of the signature flipped).
  std::string tampered = good;
  const size_t end = tampered.find("-----END");
  tampered[end - 10] = tampered[end - 10] == 'A' ? 'B' : 'A';
  EXPECT_FALSE(certs::read_csr(tampered, &who, &error));
}

TEST(Certs, PodFilesAreMadeOnceWithPrivateModes) {
  testing::TempDir dir("tls-files");
  TlsFiles tls(dir.path());
  std::string error, fingerprint;
  ASSERT_TRUE(tls.load(&error)) << error;
  EXPECT_FALSE(tls.ready());
  ASSERT_TRUE(tls.init_network("net", "a", 7, &fingerprint, &error)) << error;
  EXPECT_TRUE(tls.ready());
  EXPECT_TRUE(tls.is_ca());
  EXPECT_EQ(fingerprint, certs::cert_fingerprint(tls.ca_cert));
  for (const char* f : {"ca.key", "pod.key", "pod.crt", "ca.crt"}) {
    struct stat st;
    ASSERT_EQ(::stat((tls.dir + "/" + f).c_str(), &st), 0) << f;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << f;
  }
  // Loaded again: the same CA (init is idempotent, never a second CA).
  TlsFiles again(dir.path());
  ASSERT_TRUE(again.load(&error));
  std::string fingerprint2;
  ASSERT_TRUE(again.init_network("net", "a", 7, &fingerprint2, &error)) << error;
  EXPECT_EQ(fingerprint, fingerprint2);
  EXPECT_EQ(again.cert, tls.cert);
  // A pod that has a CA certificate but not its key belongs to a CA made elsewhere.
  testing::TempDir other("tls-files-other");
  TlsFiles joined(other.path());
  ASSERT_TRUE(joined.save("ca.crt", tls.ca_cert, &error));
  ASSERT_TRUE(joined.load(&error));
  EXPECT_FALSE(joined.init_network("net", "b", 8, &fingerprint2, &error));
}

TEST(JoinTokens, ATokenWorksForItsUsesUntilItExpiresOrIsRevoked) {
  testing::TempDir dir("tokens");
  const std::string fp(64, 'a');
  JoinTokens tokens(dir / "tokens.json");
  std::string error;
  ASSERT_TRUE(tokens.load(&error));
  const std::string once = tokens.create(60000, 1, fp, 1000, &error);
  ASSERT_FALSE(once.empty()) << error;
  std::string id, secret, fingerprint;
  ASSERT_TRUE(JoinTokens::parse(once, &id, &secret, &fingerprint));
  EXPECT_EQ(fingerprint, fp);
  EXPECT_EQ(tokens.consume(once, 2000), "");
  EXPECT_NE(tokens.consume(once, 2000).find("used up"), std::string::npos);
  // Expiry.
  const std::string brief = tokens.create(1000, 0, fp, 1000, &error);
  EXPECT_EQ(tokens.consume(brief, 1500), "");
  EXPECT_EQ(tokens.consume(brief, 1600), "");  // unlimited uses
  EXPECT_NE(tokens.consume(brief, 2000).find("expired"), std::string::npos);
  // A wrong secret with a right id; an unknown id; garbage.
  const std::string three = tokens.create(60000, 3, fp, 1000, &error);
  std::string forged = three;
  forged[4 + 8 + 1] = forged[4 + 8 + 1] == '0' ? '1' : '0';
  EXPECT_EQ(tokens.consume(forged, 2000), "wrong join token");
  EXPECT_NE(tokens.consume("wh1-00000000-" + std::string(32, '0') + "-" + fp, 2000), "");
  EXPECT_NE(tokens.consume("garbage", 2000), "");
  EXPECT_NE(tokens.consume(std::string(100000, 'x'), 2000), "");
  // Revocation, and everything survives a restart (uses counted durably).
  EXPECT_EQ(tokens.consume(three, 2000), "");
  JoinTokens reloaded(dir / "tokens.json");
  ASSERT_TRUE(reloaded.load(&error)) << error;
  EXPECT_NE(reloaded.consume(once, 2000).find("used up"), std::string::npos);
  ASSERT_TRUE(reloaded.revoke(three.substr(4, 8), &error)) << error;
  EXPECT_NE(reloaded.consume(three, 2000).find("revoked"), std::string::npos);
  const nlohmann::json list = reloaded.list(2000);
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list.dump().find(secret), std::string::npos);  // secrets are never listed
  // No CA fingerprint: no token.
  EXPECT_EQ(tokens.create(1000, 1, "", 1000, &error), "");
}

TEST(JoinTokens, AMalformedTokenFileIsRefused) {
  testing::TempDir dir("tokens-bad");
  TlsFiles files(dir.path());
  std::string error;
  ASSERT_TRUE(files.save("tokens.json", "[{\"id\": 5}]", &error));
  JoinTokens tokens(files.dir + "/tokens.json");
  EXPECT_FALSE(tokens.load(&error));
}

TEST(AdminAuth, OnlyAListedAdminsFreshSignatureOfThatActionCounts) {
  std::string alice_key, alice_pub, mallory_key, mallory_pub, error;
  ASSERT_TRUE(certs::create_admin_key(&alice_key, &alice_pub, &error)) << error;
  ASSERT_TRUE(certs::create_admin_key(&mallory_key, &mallory_pub, &error)) << error;
  const std::vector<std::string> admins{"alice:" + alice_pub};
  const uint64_t now = 1'000'000'000;
  auto signed_by = [&](const std::string& key, const std::string& action, const std::string& pod, uint64_t t) {
    std::string sig, err;
    EXPECT_TRUE(certs::sign_message(key, admin_statement("net", action, pod, t), &sig, &err)) << err;
    return sig;
  };
  EXPECT_EQ(check_admin(admins, "net", "forget", "b", now, now, "alice", signed_by(alice_key, "forget", "b", now)), "");
  // No admins listed: anyone.
  EXPECT_EQ(check_admin({}, "net", "forget", "b", 0, now, "", ""), "");
  // Unsigned, signed by a non-admin, by another key under alice's name, for another
  // action, pod or network, or too old: refused, naming the rule.
  const std::string unsigned_why = check_admin(admins, "net", "forget", "b", now, now, "", "");
  EXPECT_NE(unsigned_why.find("network.admins"), std::string::npos) << unsigned_why;
  EXPECT_NE(check_admin(admins, "net", "forget", "b", now, now, "mallory", signed_by(mallory_key, "forget", "b", now)),
            "");
  EXPECT_NE(check_admin(admins, "net", "forget", "b", now, now, "alice", signed_by(mallory_key, "forget", "b", now)),
            "");
  EXPECT_NE(check_admin(admins, "net", "drain", "b", now, now, "alice", signed_by(alice_key, "forget", "b", now)), "");
  EXPECT_NE(check_admin(admins, "net", "forget", "c", now, now, "alice", signed_by(alice_key, "forget", "b", now)), "");
  EXPECT_NE(check_admin(admins, "other", "forget", "b", now, now, "alice", signed_by(alice_key, "forget", "b", now)),
            "");
  const uint64_t old = now - kAdminStatementMaxAgeMs - 1;
  EXPECT_NE(check_admin(admins, "net", "forget", "b", old, now, "alice", signed_by(alice_key, "forget", "b", old)), "");
  EXPECT_NE(check_admin(admins, "net", "forget", "b", now, now, "alice", std::string(64, '\0')), "");
  EXPECT_NE(check_admin(admins, "net", "forget", "b", now, now, "alice", "short"), "");
  // Malformed public keys verify nothing.
  EXPECT_FALSE(certs::verify_message("", "m", std::string(64, 'x')));
  EXPECT_FALSE(certs::verify_message(std::string(44, '!'), "m", std::string(64, 'x')));
}

}  // namespace
}  // namespace wormhole
