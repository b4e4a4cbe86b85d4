//! The test of one platform of an image (its entry's `test`, or the catalog's): run once that
//! platform is pushed to its working tag `<tag>-<arch>`, on the node that built it, before any
//! tag of the image moves. The image is handed over by digest (`IMAGE`, `{image}`), so the test
//! reads exactly what was built, and the node's engine with it (`DOCKER_CONTEXT`), so an arm64
//! test starts its containers on the arm64 node, natively, never under QEMU here.

use xshell::cmd;

use crate::catalog::Image;
use crate::ctx::Ctx;
use crate::failure::Failure;
use crate::platform::Platform;
use crate::platform_build::node::Node;
use crate::published::Destination;
use crate::registry::reference::repository_of;
use crate::runner::sh;

/// Run `words` (the test's command line, split) for `platform` of `image`, pushed at `pushed`
/// by `node`. A failure is the image's: "test on linux/arm64 failed: …".
pub fn test_platform(
    ctx: &Ctx,
    destination: Option<&Destination>,
    words: &[String],
    image: &Image,
    platform: &Platform,
    node: &Node,
    pushed: &str,
) -> Result<(), Failure> {
    let failed = |why: String| Failure::permanent(format!("test on {platform} failed: {why}"));
    let by_digest = match destination {
        // A dry run: the digest the push gives is not known yet.
        None => format!("{}@<the digest of {pushed}>", repository_of(pushed)),
        Some(destination) => {
            destination.forget(pushed);
            match destination.digest(pushed) {
                Ok(Some(digest)) => format!("{}@{digest}", repository_of(pushed)),
                Ok(None) => return Err(failed(format!("{pushed} is not there to test"))),
                Err(err) => return Err(failed(format!("{err:#}"))),
            }
        }
    };
    let fill = |word: &String| {
        word.replace("{image}", &by_digest)
            .replace("{name}", &image.name)
            .replace("{platform}", &platform.to_string())
    };
    let (program, args) = (fill(&words[0]), words[1..].iter().map(fill).collect::<Vec<_>>());
    // From the root of the catalog's checkout, where its tests' paths start.
    let folder = crate::run_values::repository_root(&ctx.root.join(image.folder()));
    ctx.runner.say(&format!("then its test, on {}, from {}:", node.place(), folder.display()));
    let sh = sh();
    let mut test =
        cmd!(sh, "{program} {args...}").env("IMAGE", &by_digest).env("PLATFORM", platform.to_string());
    if let Some(context) = &node.engine.context {
        test = test.env("DOCKER_CONTEXT", context);
    }
    ctx.runner.in_folder(folder).run(test).map_err(|err| failed(format!("{err:#}")))
}
